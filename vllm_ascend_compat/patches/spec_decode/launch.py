"""The Triton launch signatures of 0.20+ (the kernels' own parameter names), on the torch kernels.

Shared by the release-keyed modules that install them: ``before_0_30`` launches them
as ``kernel[grid](...)``, ``since_0_30`` behind the warm-up dispatchers of 0.30+.
"""

from typing import Any

import torch

from vllm_ascend_compat.patches.spec_decode import kernels


def greedy(
    grid: tuple[int, ...],
    output_token_ids_ptr: torch.Tensor,  # the Triton kernel's own parameter names
    cu_num_draft_tokens_ptr: torch.Tensor,
    draft_token_ids_ptr: torch.Tensor,
    target_argmax_ptr: torch.Tensor,
    bonus_token_ids_ptr: torch.Tensor,
    is_greedy_ptr: torch.Tensor | None,
    max_spec_len: int,
    uniform_probs_ptr: torch.Tensor | None,
    synthetic_conditional_rates_ptr: torch.Tensor | None,
    SYNTHETIC_MODE: bool,
) -> None:
    kernels.rejection_greedy_sample(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        target_argmax_ptr, bonus_token_ids_ptr, is_greedy_ptr, max_spec_len, uniform_probs_ptr,
        synthetic_conditional_rates_ptr if SYNTHETIC_MODE else None,
    )  # fmt: skip


def random(
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
    synthetic_conditional_rates_ptr: torch.Tensor | None,
    NO_DRAFT_PROBS: bool,
    SYNTHETIC_MODE: bool,
) -> None:
    kernels.rejection_random_sample(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        None if NO_DRAFT_PROBS else draft_probs_ptr, target_probs_ptr, bonus_token_ids_ptr,
        recovered_token_ids_ptr, uniform_probs_ptr, is_greedy_ptr, max_spec_len,
        synthetic_conditional_rates_ptr if SYNTHETIC_MODE else None,
    )  # fmt: skip


def expand(
    grid: tuple[int, ...],
    output_ptr: torch.Tensor,
    input_ptr: torch.Tensor,
    cu_num_tokens_ptr: torch.Tensor,
    replace_from: Any,
    replace_to: Any,
    MAX_NUM_TOKENS: int,
    **launch_options: Any,  # num_warps before 0.13
) -> None:
    kernels.expand(
        grid[0], output_ptr, input_ptr, cu_num_tokens_ptr, replace_from, replace_to,
        MAX_NUM_TOKENS,
    )  # fmt: skip


def recovered(
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
    USE_FP64_GUMBEL: bool,
) -> None:
    kernels.sample_recovered_tokens(
        grid[0], output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr,
        None if NO_DRAFT_PROBS else draft_probs_ptr, target_probs_ptr, inv_q_ptr, inverted=True,
    )  # fmt: skip
