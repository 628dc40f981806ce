"""Every environment variable the plugin reads, in one place."""

from __future__ import annotations

import os
from pathlib import Path

# Run the plugin on the CPU (kernels on the CPU, device type "cpu") instead of an NPU.
CPU_MODE = "VLLM_ASCEND_COMPAT_CPU"
# KV cache budget in GiB for the CPU mode (vLLM's --kv-cache-memory takes precedence).
CPU_KV_CACHE_GIB = "VLLM_ASCEND_COMPAT_CPU_KV_CACHE_GIB"
# Treat the installed vLLM as this release (source builds without version metadata).
VLLM_VERSION = "VLLM_ASCEND_COMPAT_VLLM_VERSION"
# Load on a vLLM release outside the supported window instead of refusing.
ALLOW_UNSUPPORTED = "VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED"
# Comma-separated patch ids not to apply.
DISABLE_PATCHES = "VLLM_ASCEND_COMPAT_DISABLE_PATCHES"

# Where built ops (and, for nox, environments) are cached; default ~/.cache/vllm-ascend-compat.
CACHE = "VLLM_ASCEND_COMPAT_CACHE"

_TRUE = {"1", "true", "yes", "on"}


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE, Path.home() / ".cache" / "vllm-ascend-compat"))


def id_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
