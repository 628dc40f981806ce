"""Slot mapping in torch from 0.32: the launcher object's ``__call__`` is replaced."""

from typing import Any

import torch
from vllm.v1.attention.backends.utils import PAD_SLOT_ID

from vllm_ascend_compat.patches.triton_kernels.launch import no_context_parallel, slot_mapping


def torch_slot_mapping(original: Any) -> Any:
    def __call__(
        self: Any,
        num_reqs: int,
        num_tokens: int,
        max_num_tokens: int,
        query_start_loc: torch.Tensor,
        positions: torch.Tensor,
        block_table: torch.Tensor,
        block_table_stride: int,
        slot_mapping_out: torch.Tensor,
        kv_cache_block_size: int,
        total_cp_world_size: int,
        total_cp_rank: int,
        cp_kv_cache_interleave_size: int,
    ) -> None:
        no_context_parallel(total_cp_world_size)
        slot_mapping(
            num_reqs, num_tokens, max_num_tokens, query_start_loc, positions, block_table,
            block_table_stride, kv_cache_block_size, slot_mapping_out, PAD_SLOT_ID,
        )  # fmt: skip

    return __call__
