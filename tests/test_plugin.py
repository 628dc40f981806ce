"""The entry points on a real vLLM release: activation, resolution, unsupported releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS_DIR, check_python, clean_env, run_python

from vllm_ascend_compat import release

pytestmark = pytest.mark.usefixtures("vllm_release")

RESOLVE = """
import logging
logging.basicConfig(level=logging.INFO)  # vLLM 0.32+ configures its logging only in engines
from vllm.platforms import current_platform
print("PLATFORM", type(current_platform).__module__ + "." + type(current_platform).__qualname__)
"""


def _platform(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("PLATFORM"))


def test_cpu_mode_resolves_to_the_plugin_platform() -> None:
    output = check_python(RESOLVE, VLLM_ASCEND_COMPAT_CPU="1")
    assert _platform(output) == "vllm_ascend_compat.platform.NPUPlatform"


def test_inactive_plugin_leaves_vllm_resolution_unchanged() -> None:
    with_plugin = check_python(RESOLVE)
    without_plugin = check_python(RESOLVE, VLLM_PLUGINS="none-selected")
    assert _platform(with_plugin) == _platform(without_plugin)
    assert "vllm-ascend-compat inactive: torch_npu is not installed" in with_plugin


def test_inactive_plugin_applies_no_patch() -> None:
    check_python(
        """
import vllm.sampling_params as sp
before = sp.SamplingParams.__dict__['_verify_args']
from vllm.plugins import load_general_plugins
load_general_plugins()
from vllm_ascend_compat import patching
assert patching.report() == [], patching.report()
assert sp.SamplingParams.__dict__['_verify_args'] is before
"""
    )


def test_entry_points_are_cheap_to_call_again() -> None:
    check_python(
        """
import time
from vllm_ascend_compat import plugin
plugin.general_plugin(); plugin.platform_plugin()
start = time.perf_counter()
for _ in range(1000):
    plugin.general_plugin(); plugin.platform_plugin()
per_call = (time.perf_counter() - start) / 2000
assert per_call < 1e-3, per_call
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )


def test_general_plugin_imports_no_model_layers() -> None:
    """The API server loads the general plugins too but builds no model: registering the
    quantization method must not import vLLM's linear layers there (about 0.5 s)."""
    output = check_python(
        """
import sys
import vllm
from vllm.platforms import current_platform
from vllm.plugins import load_general_plugins
LINEAR = "vllm.model_executor.layers.linear"
before = LINEAR in sys.modules
load_general_plugins()
from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
print("PLATFORM", type(current_platform).__name__, "ASCEND", "ascend" in QUANTIZATION_METHODS)
print("LINEAR", before, LINEAR in sys.modules)
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )
    assert "PLATFORM NPUPlatform ASCEND True" in output, output
    [linear] = [line for line in output.splitlines() if line.startswith("LINEAR")]
    before, after = linear.split()[1:]
    assert after == before, output


def test_unsupported_release_fails_at_load_with_the_window_and_the_opt_in() -> None:
    proc = run_python(
        "from vllm.plugins import load_general_plugins; load_general_plugins()",
        VLLM_ASCEND_COMPAT_CPU="1",
        VLLM_ASCEND_COMPAT_VLLM_VERSION="0.8.5",
    )
    assert proc.returncode != 0
    window = f"outside the supported window: every release from {release.window().describe()}"
    assert f"vLLM 0.8.5 is {window}" in proc.stderr
    assert "VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED=1" in proc.stderr


def test_unsupported_release_is_logged_by_the_platform_plugin_too() -> None:
    output = check_python(
        RESOLVE, VLLM_ASCEND_COMPAT_CPU="1", VLLM_ASCEND_COMPAT_VLLM_VERSION="0.8.5"
    )
    assert "vllm-ascend-compat cannot load: vLLM 0.8.5 is outside the supported window" in output
    assert _platform(output) != "vllm_ascend_compat.platform.NPUPlatform"


def test_opt_in_proceeds_on_an_unsupported_release_with_a_warning() -> None:
    output = check_python(
        RESOLVE,
        VLLM_ASCEND_COMPAT_CPU="1",
        VLLM_ASCEND_COMPAT_VLLM_VERSION="0.8.5",
        VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED="1",
    )
    assert _platform(output) == "vllm_ascend_compat.platform.NPUPlatform"
    assert "overrides the installed vLLM" in output
    assert "Proceeding because VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED is set" in output


def test_doctor_prints_the_plan_and_exits_zero(vllm_release: str) -> None:
    output = check_python(
        "from vllm_ascend_compat.cli import main; raise SystemExit(main(['doctor']))",
        VLLM_ASCEND_COMPAT_CPU="1",
    )
    assert f"in the window {release.window().describe()}" in output
    assert "active on cpu" in output
    assert f"patch plan for vLLM {vllm_release}:" in output


@pytest.mark.parametrize("mode", [{}, {"VLLM_ASCEND_COMPAT_CPU": "1"}], ids=["inactive", "cpu"])
def test_doctor_json_is_all_of_stdout_and_checks_every_patch(
    vllm_release: str, mode: dict[str, str]
) -> None:
    """The console script as a user runs it: stdout parses as one JSON document, though
    vLLM logs to stdout on some releases; each patch's target is checked."""
    script = Path(sys.executable).with_name("vllm-ascend-compat")
    proc = subprocess.run(
        [str(script), "doctor", "--json"],
        capture_output=True, text=True, env=clean_env(**mode), cwd=TESTS_DIR, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    from vllm_ascend_compat.patches import ALL

    assert report["vllm"]["release"] == vllm_release and report["vllm"]["supported"]
    assert report["activation"]["active"] == bool(mode)
    assert [row["id"] for row in report["patches"]] == [p.id for p in ALL]
    for row in report["patches"]:
        assert row["check"] in ("ok", "not needed"), row


def test_doctor_exits_nonzero_when_a_required_patch_cannot_apply(vllm_release: str) -> None:
    """Remove the target of a patch this line needs, as an upstream refactor would."""
    from packaging.version import Version

    from vllm_ascend_compat.patches import ALL

    patch = next(p for p in ALL if p.applies_to(Version(vllm_release)) and not p.optional)
    *parents, name = patch.attr_path
    proc = run_python(
        f"""
import functools, importlib
from vllm_ascend_compat.cli import main
owner = functools.reduce(getattr, {parents!r}, importlib.import_module({patch.module!r}))
delattr(owner, {name!r})
raise SystemExit(main(['doctor']))
""",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # a deleted method may still resolve to a base class's, then with another signature
    assert patch.id in proc.stdout
    assert "target not found" in proc.stdout or "signature drift" in proc.stdout, proc.stdout


def test_patches_command_explains_one_patch() -> None:
    output = check_python(
        "from vllm_ascend_compat.cli import main; raise SystemExit(main(['patches', "
        "'reject-non-finite-sampling']))"
    )
    assert "https://github.com/vllm-project/vllm/pull/45116" in output
    assert "remove when" in output and "<0.24.0" in output


def test_patches_command_rejects_an_unknown_id() -> None:
    proc = run_python(
        "from vllm_ascend_compat.cli import main; raise SystemExit(main(['patches', 'nope']))"
    )
    assert proc.returncode == 2 and "unknown patch id 'nope'" in proc.stderr


@pytest.mark.e2e
def test_inactive_plugin_leaves_llm_startup_unchanged(tiny_model) -> None:
    """No NPU and no CPU mode: vLLM does exactly what it does without the plugin."""
    script = f"""
if __name__ == "__main__":
    from vllm import LLM
    try:
        LLM(model={str(tiny_model)!r}, dtype="float32", max_model_len=64)
    except Exception as err:
        print("OUTCOME", type(err).__name__, str(err).splitlines()[0][:300])
    else:
        print("OUTCOME started")
"""
    outcomes = []
    for env in ({}, {"VLLM_PLUGINS": "none-selected"}):
        output = check_python(script, HF_HUB_OFFLINE="1", **env)
        outcomes.append(next(line for line in output.splitlines() if line.startswith("OUTCOME")))
    assert outcomes[0] == outcomes[1], outcomes


V0_CONFIG = """
from vllm.engine.arg_utils import EngineArgs
import vllm.envs as envs
print("KNOWS_VLLM_USE_V1", "VLLM_USE_V1" in dir(envs))
try:
    config = EngineArgs(model={model!r}, dtype="float32", max_model_len=64,
                        max_num_seqs=8).create_engine_config()
except Exception as err:
    print("REFUSED", type(err).__name__, err)
else:
    print("CONFIG", config.parallel_config.worker_cls, config.scheduler_config.scheduler_cls)
"""


def test_v0_engine_is_refused_clearly(tiny_model, vllm_release: str) -> None:
    """VLLM_USE_V1=0 selects V0 (0.9.2, 0.11.0), which the plugin does not implement."""
    output = check_python(
        V0_CONFIG.format(model=str(tiny_model)),
        VLLM_ASCEND_COMPAT_CPU="1", VLLM_USE_V1="0", HF_HUB_OFFLINE="1",
    )  # fmt: skip
    if "KNOWS_VLLM_USE_V1 True" in output:
        assert "REFUSED RuntimeError vllm-ascend-compat runs vLLM's V1 engine only" in output
    else:  # 0.11.1+: the variable is gone; the V1 engine runs on the plugin's classes
        assert (
            "CONFIG vllm_ascend_compat.worker.NPUWorker "
            "vllm_ascend_compat.scheduler.NPUScheduler" in output
        ), output
