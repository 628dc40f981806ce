"""Logprobs, prompt logprobs and beam search through the plugin, against HF transformers.

The values come from the tp1 engine run (tests/e2e.py: its LOGPROBS and BEAM_SEARCH
batches); the oracle is HF's float32 forward on the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import BEAM, BEAM_SEARCH, GREEDY, LOGPROBS, TOP_LOGPROBS

from vllm_ascend_compat.testing import hf_beam_search, hf_log_softmax

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

TOLERANCE = 1e-4  # float32 logprobs, absolute


def _check_position(hf_row: Any, got: list[list[float]], where: str) -> int:
    """One position's returned [token, logprob, rank] rows against HF's distribution:
    each value and rank, and the top-k set. Returns the number of values compared."""
    import torch

    assert got, f"{where}: no logprobs returned"
    top = {int(t) for t in torch.topk(hf_row, TOP_LOGPROBS).indices}
    ranked = {int(token) for token, _, rank in got if rank <= TOP_LOGPROBS}
    assert ranked == top, f"{where}: top-{TOP_LOGPROBS} {sorted(ranked)} vs HF {sorted(top)}"
    for token, logprob, rank in got:
        expected = float(hf_row[int(token)])
        assert abs(logprob - expected) <= TOLERANCE, f"{where}: {token} {logprob} vs HF {expected}"
        hf_rank = 1 + int((hf_row > hf_row[int(token)]).sum())
        assert rank == hf_rank, f"{where}: token {token} rank {rank} vs HF {hf_rank}"
    return len(got)


@pytest.mark.feature("logprobs")
def test_logprobs_and_prompt_logprobs_equal_hf_log_softmax(
    tp1: dict[str, Any], tiny_model: Path
) -> None:
    outputs = tp1["batches"][len(GREEDY)]
    assert len(outputs) == len(LOGPROBS["prompts"])
    sequences = [out["prompt_token_ids"] + out["tokens"] for out in outputs]
    compared = 0
    for out, hf in zip(outputs, hf_log_softmax(tiny_model, sequences), strict=True):
        prompt_len = out["prompt_len"]
        assert len(out["logprobs"]) == len(out["tokens"]) == LOGPROBS["sampling"]["max_tokens"]
        for j, (token, got) in enumerate(zip(out["tokens"], out["logprobs"], strict=True)):
            assert token in {int(t) for t, _, _ in got}, f"sampled token {token} not returned"
            compared += _check_position(hf[prompt_len + j - 1], got, f"output position {j}")
        prompt_rows = out["prompt_logprobs"]
        assert len(prompt_rows) == prompt_len and prompt_rows[0] == []  # the first has none
        for i in range(1, prompt_len):
            got = prompt_rows[i]
            assert out["prompt_token_ids"][i] in {int(t) for t, _, _ in got}
            compared += _check_position(hf[i - 1], got, f"prompt position {i}")
    print(f"{compared} logprobs equal HF log_softmax within {TOLERANCE}")


@pytest.mark.feature("beam-search")
def test_beam_search_equals_hf(tp1: dict[str, Any], tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    outputs = tp1["batches"][len(GREEDY) + 1]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [tokenizer(p).input_ids for p in BEAM_SEARCH["prompts"]]
    expected = hf_beam_search(tiny_model, prompts, BEAM["beam_width"], BEAM["max_tokens"])
    for out, hf_beams, prompt in zip(outputs, expected, prompts, strict=True):
        got = [beam["tokens"] for beam in out["beams"]]
        assert len(got) == BEAM["beam_width"]
        assert all(len(b) == len(prompt) + BEAM["max_tokens"] for b in got), got
        assert got == hf_beams, f"vLLM beams {got} vs HF {hf_beams}"
    print(f"{len(outputs)} prompts x {BEAM['beam_width']} beams equal HF beam search")
