"""Torch stand-ins for the Triton kernels of vLLM's rejection sampler (no vLLM imports).

Each function does what one Triton program grid does, for the whole batch at once:
requests are rows, a request's draft tokens are the slice ``cu[i-1]:cu[i]`` of the
flattened token tensors. The release-keyed modules adapt them to each release's
kernel parameters. A padded draft id (-1) is never accepted.
"""

from __future__ import annotations

from typing import Any

import torch


class _Rows:
    """Where request ``r``'s draft ``p`` sits in the flat token tensors: ``index[r, p]``."""

    def __init__(self, cu_num_draft_tokens: torch.Tensor, batch_size: int, width: int) -> None:
        cu = cu_num_draft_tokens[:batch_size].long()
        self.starts = torch.cat([cu.new_zeros(1), cu[:-1]])
        self.counts = cu - self.starts
        self.num_tokens = int(cu[-1]) if batch_size else 0
        pos = torch.arange(width, device=cu.device)
        self.valid = pos[None, :] < self.counts[:, None]
        self.index = (self.starts[:, None] + pos[None, :]).clamp(max=max(self.num_tokens - 1, 0))

    def gather(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat[index]`` of a per-token tensor (zeros where no request has a draft)."""
        if self.num_tokens == 0:
            return flat.new_zeros(self.index.shape)
        return flat[self.index]

    def gather_at(self, matrix: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        """``matrix[index, column]`` of a per-token ``[num_tokens, vocab]`` tensor."""
        if self.num_tokens == 0:
            return matrix.new_zeros(self.index.shape)
        return matrix[self.index, column]


def _accept_prefix(
    output: torch.Tensor,
    rows: _Rows,
    selected: torch.Tensor,
    accepted: torch.Tensor,
    accepted_token: torch.Tensor,
    rejected_token: torch.Tensor,
    bonus_token_ids: torch.Tensor,
) -> None:
    """Write each selected request's drafts up to and including its first rejection.

    A position before the first rejection gets ``accepted_token``, the first rejected
    one ``rejected_token``; a request with no rejection gets its bonus token after
    its drafts. Rows that are not selected, and positions after a rejection, keep
    what ``output`` held.
    """
    width = rows.valid.shape[1]
    rejected = ~accepted & rows.valid
    rejected_before = (rejected.cumsum(dim=1) - rejected.long()) > 0
    write = rows.valid & ~rejected_before & selected[:, None]
    token = torch.where(accepted, accepted_token, rejected_token).to(output.dtype)
    output[:, :width] = torch.where(write, token, output[:, :width])
    bonus_rows = torch.nonzero(selected & ~rejected.any(dim=1)).flatten()
    bonus = bonus_token_ids.reshape(-1)[bonus_rows].to(output.dtype)
    output[bonus_rows, rows.counts[bonus_rows]] = bonus


def rejection_greedy_sample(
    batch_size: int,
    output_token_ids: torch.Tensor,
    cu_num_draft_tokens: torch.Tensor,
    draft_token_ids: torch.Tensor,
    target_argmax: torch.Tensor,
    bonus_token_ids: torch.Tensor,
    is_greedy: torch.Tensor | None,
    max_spec_len: int,
    uniform_probs: torch.Tensor | None = None,
    synthetic_conditional_rates: torch.Tensor | None = None,
) -> None:
    """Greedy requests keep the target's argmax up to the first draft that differs from it.

    In synthetic mode a draft is accepted with the conditional rate of its position
    instead (the accepted token is then the draft, a rejected one the argmax).
    """
    if batch_size == 0:
        return
    output = output_token_ids.view(-1, max_spec_len + 1)[:batch_size]
    rows = _Rows(cu_num_draft_tokens, batch_size, max_spec_len)
    draft = rows.gather(draft_token_ids).long()
    argmax = rows.gather(target_argmax).long()
    if synthetic_conditional_rates is None:
        accepted = draft == argmax
    else:
        assert uniform_probs is not None
        rates = synthetic_conditional_rates[: rows.valid.shape[1]]
        accepted = (rows.gather(uniform_probs) < rates[None, :]) & (draft >= 0)
    selected = (
        torch.ones(batch_size, dtype=torch.bool, device=output.device)
        if is_greedy is None
        else is_greedy[:batch_size].bool()
    )
    _accept_prefix(output, rows, selected, accepted, draft, argmax, bonus_token_ids)


def rejection_random_sample(
    batch_size: int,
    output_token_ids: torch.Tensor,
    cu_num_draft_tokens: torch.Tensor,
    draft_token_ids: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    bonus_token_ids: torch.Tensor,
    recovered_token_ids: torch.Tensor,
    uniform_probs: torch.Tensor,
    is_greedy: torch.Tensor,
    max_spec_len: int,
    synthetic_conditional_rates: torch.Tensor | None = None,
) -> None:
    """Random requests accept a draft when ``target_prob / draft_prob >= u`` (draft prob 1
    without draft probs, and never when it is 0); the first rejected position takes
    the recovered token. In synthetic mode ``u < rate`` of the position decides."""
    if batch_size == 0:
        return
    output = output_token_ids.view(-1, max_spec_len + 1)[:batch_size]
    rows = _Rows(cu_num_draft_tokens, batch_size, max_spec_len)
    draft = rows.gather(draft_token_ids).long()
    uniform = rows.gather(uniform_probs)
    if synthetic_conditional_rates is not None:
        accepted = uniform < synthetic_conditional_rates[: rows.valid.shape[1]][None, :]
    else:
        column = draft.clamp(min=0)
        target_prob = rows.gather_at(target_probs, column)
        if draft_probs is None:
            accepted = target_prob >= uniform
        else:
            draft_prob = rows.gather_at(draft_probs, column)
            accepted = (draft_prob > 0) & (target_prob / draft_prob >= uniform)
    accepted &= draft >= 0
    recovered = rows.gather(recovered_token_ids).long()
    selected = ~is_greedy[:batch_size].bool()
    _accept_prefix(output, rows, selected, accepted, draft, recovered, bonus_token_ids)


def expand(
    batch_size: int,
    output: torch.Tensor,
    values: torch.Tensor,
    cu_num_tokens: torch.Tensor,
    replace_from: Any,
    replace_to: Any,
    max_num_tokens: int,
) -> None:
    """Repeat each request's value over its tokens, ``replace_from`` becoming ``replace_to``."""
    if batch_size == 0:
        return
    cu = cu_num_tokens[:batch_size].long()
    starts = torch.cat([cu.new_zeros(1), cu[:-1]])
    counts = (cu - starts).clamp(max=max_num_tokens)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.arange(int(counts.sum()), device=cu.device) - first.repeat_interleave(counts)
    vals = values[:batch_size].masked_fill(values[:batch_size] == replace_from, replace_to)
    output[starts.repeat_interleave(counts) + offset] = vals.repeat_interleave(counts).to(
        output.dtype
    )


def sample_recovered_tokens(
    batch_size: int,
    output_token_ids: torch.Tensor,
    cu_num_draft_tokens: torch.Tensor,
    draft_token_ids: torch.Tensor,
    draft_probs: torch.Tensor | None,
    target_probs: torch.Tensor,
    q: torch.Tensor,
    *,
    inverted: bool,
) -> None:
    """Recovered token of every draft: argmax of ``p / q`` over the vocabulary (the first on ties).

    ``p`` is the target distribution without the draft token (no draft probs) or
    ``max(target - draft, 0)``; ``q`` holds one exponential sample per request and
    vocabulary entry, already inverted when ``inverted`` (then ``p * q``).
    """
    if batch_size == 0:
        return
    cu = cu_num_draft_tokens[:batch_size].long()
    counts = cu - torch.cat([cu.new_zeros(1), cu[:-1]])
    num_tokens = int(cu[-1])
    if num_tokens == 0:
        return
    request = torch.repeat_interleave(torch.arange(batch_size, device=cu.device), counts)
    target = target_probs[:num_tokens]
    if draft_probs is None:
        vocab = torch.arange(target.shape[-1], device=target.device)
        is_draft = vocab[None, :] == draft_token_ids[:num_tokens, None].long()
        prob = target.masked_fill(is_draft, 0)
    else:
        prob = (target - draft_probs[:num_tokens]).clamp(min=0)
    score = prob * q[request] if inverted else prob / q[request]
    output_token_ids[:num_tokens] = score.argmax(dim=-1).to(output_token_ids.dtype)
