"""The recovered-token kernel in torch for 0.17 to 0.22 (Gumbel noise as ``inv_q``),
launched like the Triton one."""

from typing import Any

import torch

from vllm_ascend_compat.patches.spec_decode import kernels
from vllm_ascend_compat.patches.triton_kernels.launch import GridLaunch


def _recovered(
    grid: tuple[int, ...],
    output_token_ids_ptr: torch.Tensor,
    cu_num_draft_tokens_ptr: torch.Tensor,
    draft_token_ids_ptr: torch.Tensor,
    draft_probs_ptr: torch.Tensor | None,
    target_probs_ptr: torch.Tensor,
    inv_q_ptr: torch.Tensor,
    vocab_size: int,
    BLOCK_SIZE: int,
    NO_DRAFT_PROBS: bool,
) -> None:
    kernels.sample_recovered_tokens(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        None if NO_DRAFT_PROBS else draft_probs_ptr, target_probs_ptr, inv_q_ptr, inverted=True,
    )  # fmt: skip


def torch_recovered_tokens(original: Any) -> GridLaunch:
    return GridLaunch(_recovered)
