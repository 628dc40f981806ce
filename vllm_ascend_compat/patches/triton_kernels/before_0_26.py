"""Slot mapping in torch for 0.19 to 0.25, launched like the Triton kernel it replaces."""

from typing import Any

import torch

from vllm_ascend_compat.patches.triton_kernels.launch import (
    GridLaunch,
    no_context_parallel,
    slot_mapping,
)


def _kernel(
    grid: tuple[int, ...],
    num_tokens: int,
    max_num_tokens: int,
    query_start_loc: torch.Tensor,
    positions: torch.Tensor,
    block_table: torch.Tensor,
    block_table_stride: int,
    block_size: int,
    slot_mapping_out: torch.Tensor,
    TOTAL_CP_WORLD_SIZE: int,  # the Triton kernel's own parameter names
    TOTAL_CP_RANK: int,
    CP_KV_CACHE_INTERLEAVE_SIZE: int,
    PAD_ID: int,
    BLOCK_SIZE: int,
) -> None:
    no_context_parallel(TOTAL_CP_WORLD_SIZE)
    slot_mapping(
        grid[0] - 1, num_tokens, max_num_tokens, query_start_loc, positions, block_table,
        block_table_stride, block_size, slot_mapping_out, PAD_ID,
    )  # fmt: skip


def torch_slot_mapping(original: Any) -> GridLaunch:
    return GridLaunch(_kernel)
