"""Whether the plugin takes over this vLLM process, and on which device.

Active when CPU mode is asked for, or when torch_npu imports and sees an NPU.
Otherwise inactive, so installing the plugin on a GPU machine changes nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache

from vllm_ascend_compat import envs


@dataclass(frozen=True)
class Activation:
    active: bool
    device: str | None  # "npu", "cpu", or None when inactive
    reason: str


@cache
def decide() -> Activation:
    """The decision for this process; cached, since vLLM asks several times."""
    if envs.flag(envs.CPU_MODE):
        return Activation(True, "cpu", f"{envs.CPU_MODE} is set: CPU mode")
    if importlib.util.find_spec("torch_npu") is None:
        return Activation(False, None, f"torch_npu is not installed and {envs.CPU_MODE} is unset")
    try:
        import torch
        import torch_npu  # noqa: F401

        count = torch.npu.device_count()
    except Exception as err:
        return Activation(False, None, f"torch_npu cannot be used: {err!r}")
    if count == 0:
        return Activation(False, None, "torch_npu sees no NPU")
    return Activation(True, "npu", f"torch_npu sees {count} NPU(s)")
