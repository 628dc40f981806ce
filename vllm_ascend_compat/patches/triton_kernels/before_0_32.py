"""Slot mapping in torch for 0.29 to 0.31: the kernel of 0.26 is the static ``kernel`` of
``ComputeSlotMappingKernel``, launched as ``self.kernel[grid]`` (0.29) or by vLLM's
warm-up dispatcher, which binds its inputs to the kernel's parameter names (0.30+)."""

from typing import Any

from vllm_ascend_compat.patches.triton_kernels.launch import KernelLaunch, kv_blocks_kernel


def torch_slot_mapping(original: Any) -> KernelLaunch:
    return KernelLaunch(kv_blocks_kernel)
