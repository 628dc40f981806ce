"""The vLLM platform for Ascend NPUs, and for the CPU mode that stands in for one."""

from __future__ import annotations

from vllm.platforms.interface import Platform, PlatformEnum

from vllm_ascend_compat import activation

_DEVICE = activation.decide().device or "npu"


class NPUPlatform(Platform):
    _enum = PlatformEnum.OOT
    device_name = _DEVICE
    device_type = _DEVICE
    dispatch_key = "PrivateUse1" if _DEVICE == "npu" else "CPU"
    ray_device_key = "NPU"
    device_control_env_var = "ASCEND_RT_VISIBLE_DEVICES"
