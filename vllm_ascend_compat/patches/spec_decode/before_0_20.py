"""Rejection-sampler kernels in torch for releases before 0.20, launched like the Triton ones."""

from typing import Any

import torch

from vllm_ascend_compat.patches.spec_decode import kernels
from vllm_ascend_compat.patches.triton_kernels.launch import GridLaunch


def _greedy(
    grid: tuple[int, ...],
    output_token_ids_ptr: torch.Tensor,  # the Triton kernel's own parameter names
    cu_num_draft_tokens_ptr: torch.Tensor,
    draft_token_ids_ptr: torch.Tensor,
    target_argmax_ptr: torch.Tensor,
    bonus_token_ids_ptr: torch.Tensor,
    is_greedy_ptr: torch.Tensor | None,
    max_spec_len: int,
    **launch_options: Any,  # num_warps before 0.13
) -> None:
    kernels.rejection_greedy_sample(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        target_argmax_ptr, bonus_token_ids_ptr, is_greedy_ptr, max_spec_len,
    )  # fmt: skip


def _random(
    grid: tuple[int, ...],
    output_token_ids_ptr: torch.Tensor,
    cu_num_draft_tokens_ptr: torch.Tensor,
    draft_token_ids_ptr: torch.Tensor,
    draft_probs_ptr: torch.Tensor | None,
    target_probs_ptr: torch.Tensor,
    bonus_token_ids_ptr: torch.Tensor,
    recovered_token_ids_ptr: torch.Tensor,
    uniform_probs_ptr: torch.Tensor,
    is_greedy_ptr: torch.Tensor,
    max_spec_len: int,
    vocab_size: int,
    NO_DRAFT_PROBS: bool,
    **launch_options: Any,
) -> None:
    kernels.rejection_random_sample(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        None if NO_DRAFT_PROBS else draft_probs_ptr, target_probs_ptr, bonus_token_ids_ptr,
        recovered_token_ids_ptr, uniform_probs_ptr, is_greedy_ptr, max_spec_len,
    )  # fmt: skip


def torch_greedy_sample(original: Any) -> GridLaunch:
    return GridLaunch(_greedy)


def torch_random_sample(original: Any) -> GridLaunch:
    return GridLaunch(_random)
