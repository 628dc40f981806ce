"""The patch catalog and the package layout stay consistent."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO_ROOT
from packaging.specifiers import SpecifierSet
from vllm_ascend_compat.patches import ALL


def test_every_patch_folder_is_packaged() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packaged = set(config["tool"]["setuptools"]["packages"])
    folders = {
        "vllm_ascend_compat.patches." + path.parent.name
        for path in (REPO_ROOT / "patches").glob("*/__init__.py")
    }
    assert folders <= packaged, folders - packaged


def test_declarations_are_complete_and_unique() -> None:
    ids = [p.id for p in ALL]
    assert len(ids) == len(set(ids))
    for p in ALL:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.id), p.id
        assert re.fullmatch(r"[\w.]+:[\w.]+", p.target), p.target
        SpecifierSet(p.versions)
        assert p.upstream == "NPU only" or p.upstream.startswith("https://"), p.upstream
        assert p.reason and p.remove_when


def test_impl_modules_are_named_by_the_releases_they_serve() -> None:
    """``before_0_24`` serves releases below 0.24: the name and the specifier agree."""
    for p in ALL:
        module = p.impl.partition(":")[0].rsplit(".", 1)[1]
        match = re.fullmatch(r"before_(\d+)_(\d+)(?:_(\d+))?", module)
        assert match, f"{p.id}: impl module {module!r} is not named by its release key"
        bound = ".".join(g for g in match.groups() if g is not None)
        assert SpecifierSet(p.versions) == SpecifierSet(f"<{bound}") or f"<{bound}" in p.versions, (
            p.id,
            p.versions,
        )
