"""The generated docs match the registry, the release data and the recorded runs."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.release_independent


def test_committed_support_matrix_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "support_matrix", REPO_ROOT / "docs/support_matrix.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO_ROOT / "docs/support-matrix.md").read_text()
    assert committed == module.render(), (
        "docs/support-matrix.md is stale: run `python3 run_nox.py -s docs`"
    )


def test_the_readme_sets_up_with_two_commands_and_ci_runs_its_test_command() -> None:
    """A new user runs the README's two set-up commands (run_nox.py brings nox); CI runs
    the second as it is written, so what CI proves is what the user runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    set_up = readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", set_up, re.DOTALL)
    assert commands == ["python3 run_nox.py -s demo", "python3 run_nox.py -t ci"], commands
    ci = (REPO_ROOT / ".ci/run").read_text().splitlines()
    runs = [line for line in ci if "nox" in line and not line.startswith("#")]
    assert len(runs) == 1 and f"{runs[0]} ".startswith(f"{commands[1]} "), runs


def test_every_feature_names_real_tests_that_carry_its_marker() -> None:
    from conftest import FEATURES, TESTS_DIR

    from vllm_ascend_compat.release import window

    for feature in FEATURES.values():
        assert feature["tests"], feature["id"]
        for node in feature["tests"]:
            file, _, name = node.partition("::")
            source = (TESTS_DIR / file).read_text()
            assert not name or f"def {name}(" in source, f"{feature['id']}: no test {node}"
            assert f'pytest.mark.feature("{feature["id"]}")' in source, (feature["id"], file)
        assert set(feature.get("unsupported", {})) <= set(window().anchors), feature["id"]


def test_a_feature_claims_only_the_devices_its_tests_run_on() -> None:
    """The matrix's device column: a feature on the emulated NPU has tests that start their
    engines in NPU mode (``mode="npu"``, see e2e.MODE_ENV); one in CPU mode, tests that run
    CPU mode (every engine test does unless it asks for the npu)."""
    import re

    from conftest import FEATURES, TESTS_DIR

    for feature in FEATURES.values():
        devices = feature.get("devices", ["cpu"])
        assert devices and set(devices) <= {"cpu", "emulated-npu"}, feature["id"]
        sources = {(TESTS_DIR / n.partition("::")[0]).read_text() for n in feature["tests"]}
        for source in sources:
            modes = set(re.findall(r'mode="(\w+)"|\("(npu|cpu)", "\w+"(?:, \d+)+\)', source))
            asked = {m for pair in modes for m in pair if m} or {"cpu"}
            assert {"npu" if d == "emulated-npu" else d for d in devices} <= asked, (
                feature["id"], asked)  # fmt: skip


def test_required_features_run_on_every_anchor() -> None:
    """A skip names a vLLM limitation; it is not a way to hide drift in what every line runs."""
    from conftest import FEATURES

    skipped = {
        f["id"]: f["unsupported"]
        for f in FEATURES.values()
        if f.get("required") and f.get("unsupported")
    }
    assert not skipped, skipped
