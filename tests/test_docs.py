"""The generated docs match the registry and the release lines."""

from __future__ import annotations

import importlib.util

from conftest import REPO_ROOT


def test_committed_support_matrix_is_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "support_matrix", REPO_ROOT / "docs/support_matrix.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO_ROOT / "docs/support-matrix.md").read_text()
    assert committed == module.render(), "docs/support-matrix.md is stale: run `nox -s docs`"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci/run").read_text()
    assert "nox -t ci" in readme and "nox -t ci" in ci
