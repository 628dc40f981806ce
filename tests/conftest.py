"""Shared helpers: every registry case runs in a fresh interpreter, as ddtrace's PatchTestCase."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without the plugin's own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_ASCEND_COMPAT_")}
    env["PYTHONPATH"] = str(TESTS_DIR)
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
            "needs a vLLM release line: run through nox (VLLM_ASCEND_COMPAT_TEST_LINE unset)"
        )
    return line
