"""The patch registry against the window: tombstones and the out-of-range contract."""

from __future__ import annotations

import pytest
from conftest import check_python
from packaging.version import Version

from vllm_ascend_compat import release
from vllm_ascend_compat.patches import ALL

RELEASES = [Version(v) for v in release.window().releases]


@pytest.mark.release_independent
@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_patch_still_serves_a_release_of_the_window(patch) -> None:
    """Tombstone: once every release of the window has the upstream fix, the patch must go."""
    served = [str(v) for v in RELEASES if patch.applies_to(v)]
    assert served, (
        f"patch {patch.id} ({patch.versions}) applies to no release of the window: upstream "
        f"has the fix in all of them ({patch.remove_when}). Delete the patch and its reproducer."
    )


@pytest.mark.sweep
def test_out_of_range_patches_are_neither_imported_nor_applied(vllm_release: str) -> None:
    """Impl modules load only on the releases their name serves (``before_0_18``: < 0.18,
    ``since_0_30``: >= 0.30)."""
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
KEY = r"^vllm_ascend_compat\\.patches\\..*\\.(before|since)_(\\d+)_(\\d+)(?:_(\\d+))?$"
for module in list(sys.modules):
    key = re.search(KEY, module)
    if key:
        keyed[module] = (key.group(1), Version(".".join(g for g in key.groups()[1:] if g)))
for module, (side, bound) in keyed.items():
    if side == "before":
        assert rel.release < bound.release, f"{module} loaded on vLLM {rel}"
    else:
        assert rel.release >= bound.release, f"{module} loaded on vLLM {rel}"
assert keyed or not any(p.applies_to(rel) for p in ALL)
print("checked", len(ALL), "patches and", len(keyed), "impl modules")
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )
