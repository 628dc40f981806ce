"""Logprobs, prompt logprobs and beam search through the plugin, against HF transformers.

The values come from the tp1 engine run (tests/e2e.py: its LOGPROBS and BEAM_SEARCH
batches); the oracle is HF's float32 forward on the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import BEAM, BEAM_SEARCH, GREEDY, LOGPROB_TOLERANCE, assert_logprobs_equal_hf
from oracles import hf_beam_search

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]


@pytest.mark.feature("logprobs")
def test_logprobs_and_prompt_logprobs_equal_hf_log_softmax(
    tp1: dict[str, Any], tiny_model: Path
) -> None:
    compared = assert_logprobs_equal_hf(tp1["batches"][len(GREEDY)], tiny_model)
    print(f"{compared} logprobs equal HF log_softmax within {LOGPROB_TOLERANCE}")


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
