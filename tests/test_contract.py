"""The static contract on every release of the window, read from its released source.

``python3 run_nox.py -s contract`` downloads each release's sdist (or its wheel, where the
index has no sdist) and passes their paths in VLLM_ASCEND_COMPAT_SOURCES; nothing is
installed. The findings of every release are written to docs/contract-record.json,
which the support matrix renders.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from packaging.version import InvalidVersion, Version

from vllm_ascend_compat import contract, release
from vllm_ascend_compat.patches import ALL
from vllm_ascend_compat.source import ReleaseSource

pytestmark = pytest.mark.release_independent
WINDOW = release.window()
RECORD = REPO_ROOT / "docs" / "contract-record.json"


def _sources() -> dict[str, Path]:
    paths = [Path(p) for p in os.environ.get("VLLM_ASCEND_COMPAT_SOURCES", "").split(os.pathsep)]
    found = {}
    for path in paths:
        match = re.match(r"vllm-(\d[\w.]*?)(?:\.tar\.gz|-.*\.whl)$", path.name)
        if match:
            found[match.group(1)] = path
    return found


SOURCES = _sources()
needs_sources = pytest.mark.skipif(
    not SOURCES, reason="needs the releases' sources: run through python3 run_nox.py -s contract"
)


@needs_sources
def test_every_release_of_the_window_has_its_source() -> None:
    assert sorted(SOURCES, key=Version) == list(WINDOW.releases)


@needs_sources
def test_the_window_lists_every_final_release_on_the_index() -> None:
    listed = os.environ.get("VLLM_ASCEND_COMPAT_INDEX_RELEASES")
    if not listed:
        pytest.skip(
            "the index's release list was not given (python3 run_nox.py -s contract gives it)"
        )
    versions = []
    for text in listed.split(","):
        try:
            versions.append(Version(text))
        except InvalidVersion:
            continue  # a file name that is not a release's
    on_index = [str(v) for v in versions if not v.is_prerelease and WINDOW.contains(v)]
    assert sorted(on_index, key=Version) == list(WINDOW.releases)


@needs_sources
@pytest.mark.parametrize("version", WINDOW.releases)
def test_release_source_keeps_the_contract(version: str) -> None:
    findings = contract.check_release(ReleaseSource(SOURCES[version]), Version(version), ALL)
    broken = [f"{f.subject}: {f.detail}" for f in findings if not f.ok]
    assert not broken, f"vLLM {version}:\n" + "\n".join(broken)
    applied = [f.subject.removeprefix("patch ") for f in findings if f.detail.startswith("applies")]
    checked = {
        kind: sum(f.subject.startswith(kind) for f in findings)
        for kind in ("patch", "import", "override")
    }
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    record[version] = {"patches applied": applied, "checks": checked}
    ordered = dict(sorted(record.items(), key=lambda kv: Version(kv[0])))
    RECORD.write_text(json.dumps(ordered, indent=1) + "\n")


def test_a_drifted_target_breaks_the_contract(tmp_path: Path) -> None:
    """The contract can fail: a release whose target lost a parameter is reported."""
    package = tmp_path / "vllm" / "v1" / "core" / "sched"
    package.mkdir(parents=True)
    (package / "utils.py").write_text("def check_stop(request):\n    return False\n")
    source = ReleaseSource(tmp_path)
    (patch,) = [p for p in ALL if p.id == "min-tokens-keeps-length-caps"]
    (finding,) = contract.check_patches(source, Version("0.20.0"), [patch])
    assert not finding.ok and "signature (request) != (request, max_model_len)" in finding.detail


def test_a_range_that_stops_too_early_breaks_the_contract(tmp_path: Path) -> None:
    """A patch out of range whose target is still there, unchanged, is reported."""
    package = tmp_path / "vllm" / "v1" / "worker"
    package.mkdir(parents=True)
    (package / "block_table.py").write_text(
        "class ComputeSlotMappingKernel:\n"
        "    def __call__(self, num_reqs, num_tokens, max_num_tokens, query_start_loc, "
        "positions, block_table, block_table_stride, slot_mapping, kv_cache_block_size, "
        "total_cp_world_size, total_cp_rank, cp_kv_cache_interleave_size):\n"
        "        pass\n"
    )
    (patch,) = [p for p in ALL if p.id == "torch-slot-mapping-launcher"]
    narrowed = type(patch)(**{**vars(patch), "versions": ">=0.32.0,<0.33.0"})
    (finding,) = contract.check_patches(ReleaseSource(tmp_path), Version("0.33.0"), [narrowed])
    assert not finding.ok and "the range is too narrow" in finding.detail
