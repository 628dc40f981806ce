"""Slot mapping in torch for 0.26 to 0.28: a module-level Triton kernel whose KV-cache
blocks are made of kernel blocks."""

from typing import Any

from vllm_ascend_compat.patches.triton_kernels.launch import GridLaunch, kv_blocks_kernel


def torch_slot_mapping(original: Any) -> GridLaunch:
    return GridLaunch(kv_blocks_kernel)
