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
    """Impl modules load only on the releases their name serves (``before_0_18``: < 0.18)."""
    check_python(
        """
import importlib, re, sys
from packaging.version import Version
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
    expected = patching.Status.APPLIED if p.applies_to(rel) else patching.Status.OUT_OF_RANGE
    assert status[p.id] is expected, (p.id, status[p.id])
keyed = {}
KEY = r"^vllm_ascend_compat\\.patches\\..*\\.before_(\\d+)_(\\d+)(?:_(\\d+))?$"
for module in list(sys.modules):
    key = re.search(KEY, module)
    if key:
        keyed[module] = Version(".".join(g for g in key.groups() if g))
for module, bound in keyed.items():
    assert rel.release < bound.release, f"{module} loaded on vLLM {rel}"
assert keyed or not any(p.applies_to(rel) for p in ALL)
print("checked", len(ALL), "patches and", len(keyed), "impl modules")
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )
