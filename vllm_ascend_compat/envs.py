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
# The largest request body vLLM's OpenAI server reads, in bytes (larger ones get a 413).
MAX_BODY_BYTES = "VLLM_ASCEND_COMPAT_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# Before vLLM 0.18 (which has --shutdown-timeout): seconds the API server gives its requests
# in flight to finish on SIGTERM before it answers the rest with an error (default 0).
SHUTDOWN_TIMEOUT = "VLLM_ASCEND_COMPAT_SHUTDOWN_TIMEOUT"

# Where built ops (and, for nox, environments) are cached; default ~/.cache/vllm-ascend-compat.
CACHE = "VLLM_ASCEND_COMPAT_CACHE"

_TRUE = {"1", "true", "yes", "on"}


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE, Path.home() / ".cache" / "vllm-ascend-compat"))


def id_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def max_body_bytes() -> int:
    value = os.environ.get(MAX_BODY_BYTES, "").strip()
    if not value:
        return DEFAULT_MAX_BODY_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{MAX_BODY_BYTES} must be a positive number of bytes, got {value!r}")
    return int(value)


def shutdown_timeout() -> float:
    value = os.environ.get(SHUTDOWN_TIMEOUT, "").strip() or "0"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{SHUTDOWN_TIMEOUT} must be a number of seconds >= 0, got {value!r}")
    return seconds
