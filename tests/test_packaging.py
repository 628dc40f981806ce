"""The patch catalog and the package layout stay consistent."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vllm_ascend_compat.patches import ALL

pytestmark = pytest.mark.release_independent

CHECKOUT = REPO_ROOT / "vllm_ascend_compat"


def test_the_wheel_holds_every_module_kernel_and_data_file(tmp_path: Path) -> None:
    """pyproject.toml finds the packages (no hand-kept list): a wheel built from the
    checkout has every package, patch topic, kernel source and data file it has."""
    source = tmp_path / "source"  # the build writes build/ and egg-info beside its source
    shutil.copytree(CHECKOUT, source / CHECKOUT.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("vllm_ascend_compat-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in CHECKOUT.rglob("*")
        if path.suffix in {".py", ".cpp", ".h", ".toml"} and "__pycache__" not in path.parts
    }
    assert f"{CHECKOUT.name}/patches/__init__.py" in wanted
    assert wanted <= shipped, f"not in the wheel: {sorted(wanted - shipped)}"


def test_declarations_are_complete_and_unique() -> None:
    ids = [p.id for p in ALL]
    assert len(ids) == len(set(ids))
    for p in ALL:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.id), p.id
        assert re.fullmatch(r"[\w.]+:[\w.]+", p.target), p.target
        SpecifierSet(p.versions)
        assert p.upstream in {"NPU only", "hardening"} or p.upstream.startswith("https://"), (
            p.upstream
        )
        assert p.reason and p.remove_when


def test_impl_modules_are_named_by_the_releases_they_serve() -> None:
    """``before_0_24`` serves releases below 0.24 (its range's upper bound); ``since_0_24``
    serves 0.24 and later, with no upper bound; ``every_release`` serves every release (an
    empty specifier): the name and the specifier agree."""
    for p in ALL:
        module = p.impl.partition(":")[0].rsplit(".", 1)[1]
        if module == "every_release" or not p.versions:
            assert module == "every_release" and not p.versions, (p.id, module, p.versions)
            continue
        match = re.fullmatch(r"(before|since)_(\d+)_(\d+)(?:_(\d+))?", module)
        assert match, f"{p.id}: impl module {module!r} is not named by its release key"
        bound = Version(".".join(g for g in match.groups()[1:] if g is not None))
        bounds = {(s.operator, Version(s.version)) for s in SpecifierSet(p.versions)}
        if match.group(1) == "before":
            assert ("<", bound) in bounds, (p.id, p.versions)
        else:
            assert (">=", bound) in bounds, (p.id, p.versions)
            assert not any(op == "<" for op, _ in bounds), (p.id, p.versions)
