"""Backport of vLLM PR 29779 (0.12.0): the batched ngram kernel writes request rows."""

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange
from vllm.v1.spec_decode.ngram_proposer import _find_longest_matched_ngram_and_propose_tokens


def drafts_in_request_rows(original: Callable[..., Any]) -> Callable[..., Any]:
    return batch_propose_numba


@njit(parallel=True)
def batch_propose_numba(
    valid_ngram_requests: list,
    num_tokens_no_spec: np.ndarray,
    token_ids_cpu: np.ndarray,
    min_n: int,
    max_n: int,
    max_model_len: int,
    k: int,
    valid_ngram_draft: np.ndarray,
    valid_ngram_num_drafts: np.ndarray,
) -> None:
    """vLLM 0.11.0's kernel, indexing the output buffers by request row ``idx`` (was ``i``)."""
    for i in prange(len(valid_ngram_requests)):
        idx = valid_ngram_requests[i]
        num_tokens = num_tokens_no_spec[idx]
        context_token_ids = token_ids_cpu[idx, :num_tokens]
        drafter_output = _find_longest_matched_ngram_and_propose_tokens(
            origin_tokens=context_token_ids,
            min_ngram=min_n,
            max_ngram=max_n,
            max_model_len=max_model_len,
            k=k,
        )
        valid_ngram_num_drafts[idx] = drafter_output.shape[0]
        if len(drafter_output):
            valid_ngram_draft[idx, : drafter_output.shape[0]] = drafter_output
