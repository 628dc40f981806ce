"""The demo as the README runs it from a checkout: ``python -m vllm_ascend_compat.demo`` in
the repository root, where the checkout's package comes first on ``sys.path``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, clean_env

# What it proves, a complete package in the checkout, does not depend on the release.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.release_independent,
    pytest.mark.usefixtures("vllm_release"),
]

MAX_TOKENS = 8


def test_the_demo_generates_from_the_repository_root(tiny_model: Path, tmp_path: Path) -> None:
    """The whole checkout package (every patch topic, the kernels' sources) must be there
    to start an engine; a fresh vLLM cache keeps anything built before out of the way."""
    env = clean_env(VLLM_ASCEND_COMPAT_CPU="1", VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"))
    del env["PYTHONPATH"]  # nothing but the working directory puts the checkout first
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_ascend_compat.demo",
         "--model-dir", str(tiny_model), "--max-tokens", str(MAX_TOKENS)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert f" from {REPO_ROOT / 'vllm_ascend_compat'}\n" in proc.stdout, proc.stdout
    generated = [line for line in proc.stdout.splitlines() if line.startswith("generated: ")]
    assert len(generated) == 4 and all(line != "generated: ''" for line in generated), generated
    assert f"{4 * MAX_TOKENS} tokens in " in proc.stdout, proc.stdout
