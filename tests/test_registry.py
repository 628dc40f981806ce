"""The patch registry against the supported lines: tombstones and the out-of-range contract."""

from __future__ import annotations

import pytest
from conftest import check_python
from packaging.version import Version
from vllm_ascend_compat.patches import ALL

from vllm_ascend_compat import release

LINES = [Version(line) for line in release.supported_lines()]


@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_patch_still_serves_a_supported_line(patch) -> None:
    """Tombstone: once every supported line has the upstream fix, the patch must go."""
    served = [str(line) for line in LINES if patch.applies_to(line)]
    assert served, (
        f"patch {patch.id} ({patch.versions}) applies to no supported line: upstream has the "
        f"fix on every line ({patch.remove_when}). Delete the patch and its reproducer."
    )


def test_out_of_range_patches_are_neither_imported_nor_applied(vllm_release: str) -> None:
    check_python(
        """
import importlib, sys
from vllm_ascend_compat import patching, plugin, release
from vllm_ascend_compat.patches import ALL
rel = release.detect().release
for p in ALL:
    if p.applies_to(rel):
        importlib.import_module(p.module)  # loaded, so no in-range patch stays pending
for phase in patching.Phase:
    plugin.apply_phase(phase)
status = {o.patch_id: o.status for o in patching.report()}
for p in ALL:
    impl_module = p.impl.partition(":")[0]
    if p.applies_to(rel):
        assert status[p.id] is patching.Status.APPLIED, (p.id, status[p.id])
    else:
        assert status[p.id] is patching.Status.OUT_OF_RANGE, (p.id, status[p.id])
        assert impl_module not in sys.modules, f"{p.id}: {impl_module} imported out of range"
print("checked", len(ALL))
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )
