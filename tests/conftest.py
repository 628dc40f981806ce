"""Shared helpers: every registry case runs in a fresh interpreter, as ddtrace's PatchTestCase."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent
FEATURES = {f["id"]: f for f in tomllib.loads((TESTS_DIR / "features.toml").read_text())["feature"]}


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without the plugin's own variables, plus ``extra``. The
    tests' folder leads the caller's PYTHONPATH, which stays: a run from a checkout
    (``PYTHONPATH=<checkout>``, nothing installed) keeps the checkout in its subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_ASCEND_COMPAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_python(code: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        cwd=TESTS_DIR,
        timeout=timeout,
    )


def check_python(code: str, timeout: float = 300, **env: str) -> str:
    """Run ``code`` in a fresh interpreter; fail with its output unless it exits 0."""
    proc = run_python(code, timeout=timeout, **env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def vllm_release() -> str:
    """The vLLM release line installed in this environment (nox sets it)."""
    line = os.environ.get("VLLM_ASCEND_COMPAT_TEST_LINE")
    if not line:
        pytest.skip(
            "needs a vLLM release line: run through run_nox.py (VLLM_ASCEND_COMPAT_TEST_LINE unset)"
        )
    return line


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a feature's tests, with the declared vLLM reason, on lines that cannot run it."""
    line = os.environ.get("VLLM_ASCEND_COMPAT_TEST_LINE")
    for marker in item.iter_markers("feature"):
        feature = FEATURES[marker.args[0]]
        reason = feature.get("unsupported", {}).get(line)
        if reason:
            pytest.skip(f"{marker.args[0]} is not supported on vLLM {line}: {reason}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (nox runs two workers), every test that starts a vLLM engine goes
    to one worker, so engines run one at a time on the two cores; the fresh-interpreter
    tests, bound by vLLM's single-threaded import, fill the other worker."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.xdist_group("engine"))


# --- end-to-end fixtures: one tiny model, one reference run, one HF oracle per session ---


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_ascend_compat.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tp1(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, vllm_release: str) -> dict:
    """The offline run through the plugin that other end-to-end tests compare against, with
    vLLM's default engine core process (the other offline runs keep it in process)."""
    from e2e import run_llm

    return run_llm(
        tiny_model, tmp_path_factory.mktemp("tp1"), env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    )


@pytest.fixture(scope="session")
def oracle(tiny_model: Path) -> dict[str, list[int]]:
    """HF transformers' greedy tokens for every e2e prompt, computed once per model, prompts,
    torch and transformers: kept on disk, so the sweep's releases share them."""
    import torch
    import transformers
    from e2e import FIRST, LONG, MAX_TOKENS, SECOND
    from oracles import hf_greedy

    from vllm_ascend_compat import envs

    key = hashlib.sha256(
        json.dumps(
            [FIRST, SECOND, LONG, MAX_TOKENS, torch.__version__, transformers.__version__]
        ).encode()
    )
    for path in sorted(tiny_model.iterdir()):
        key.update(path.read_bytes())
    cached = envs.cache_dir() / "hf-reference" / f"{key.hexdigest()[:24]}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    prompts = sorted(set(FIRST + SECOND))
    result = dict(zip(prompts, hf_greedy(tiny_model, prompts, MAX_TOKENS), strict=True))
    result.update(zip(LONG, hf_greedy(tiny_model, LONG, MAX_TOKENS, ignore_eos=True), strict=True))
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    return result
