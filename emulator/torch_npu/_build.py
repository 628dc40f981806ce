"""Build (once, cached) and load the emulated npu device's C++ extension."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "npu_device.cpp"
NAME = "vllm_ascend_compat_npu_emulator"


def cache_root() -> Path:
    """``$VLLM_ASCEND_COMPAT_CACHE/emulator``, else ``~/.cache/vllm-ascend-compat/emulator``."""
    base = os.environ.get("VLLM_ASCEND_COMPAT_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "vllm-ascend-compat"
    return root / "emulator"


def build_dir() -> Path:
    """One build per torch version, torch install (its headers are in the build commands)
    and source text."""
    digest = hashlib.sha256()
    for part in (torch.__version__, str(Path(torch.__file__).resolve().parent)):
        digest.update(part.encode())
    digest.update(SOURCE.read_bytes())
    return cache_root() / f"torch-{torch.__version__}-{digest.hexdigest()[:16]}"


def load() -> ModuleType:
    """Compile the extension into :func:`build_dir` unless it is there, and load it.

    The source is copied into the build directory first, so the build does not depend on
    the checkout's file times; ``cpp_extension.load`` locks the directory, so processes
    starting together build it once.
    """
    from torch.utils import cpp_extension

    directory = build_dir()
    source = directory / "src" / SOURCE.name
    if not source.exists():
        staging = directory / f"src.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE, staging / SOURCE.name)
        try:
            staging.rename(directory / "src")
        except OSError:  # another process staged it first
            shutil.rmtree(staging)
    return cpp_extension.load(
        name=NAME,
        sources=[str(source)],
        extra_cflags=["-O2"],
        build_directory=str(directory),
        is_python_module=True,
        verbose=False,
    )
