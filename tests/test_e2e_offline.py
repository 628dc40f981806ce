"""vLLM's LLM.generate through the plugin in CPU mode, token for token against HF transformers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from e2e import FIRST, LONG, MAX_MODEL_LEN, SECOND, greedy_tokens, run_llm

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]


@pytest.mark.sweep
@pytest.mark.feature("offline")
@pytest.mark.feature("chunked-prefill")
def test_greedy_tokens_equal_hf(tp1: dict[str, Any], oracle: dict[str, list[int]]) -> None:
    prompts = FIRST + SECOND + LONG
    got = greedy_tokens(tp1)
    matched = sum(g == oracle[p] for g, p in zip(got, prompts, strict=True))
    total = sum(len(oracle[p]) for p in prompts)
    same = sum(
        sum(a == b for a, b in zip(g, oracle[p], strict=False))
        for g, p in zip(got, prompts, strict=True)
    )
    print(f"token match rate vs HF: {same}/{total}; sequences {matched}/{len(prompts)}")
    for g, p in zip(got, prompts, strict=True):
        assert g == oracle[p], f"prompt {p[:40]!r}: vLLM {g[:12]} vs HF {oracle[p][:12]}"


@pytest.mark.sweep
@pytest.mark.feature("prefix-caching")
def test_second_batch_reused_the_cached_prefix(tp1: dict[str, Any]) -> None:
    second = tp1["batches"][1]
    assert all(out["num_cached_tokens"] >= 16 for out in second), second
    counters = tp1["counters"]
    print("prefix cache counters:", counters)
    # the metrics count at least the blocks the second batch reused (0.9.0 and 0.9.1 call
    # the counter vllm:gpu_prefix_cache_hits)
    hits = counters.get("vllm:prefix_cache_hits", counters.get("vllm:gpu_prefix_cache_hits"))
    assert hits is not None, counters
    assert hits >= sum(out["num_cached_tokens"] for out in second)


@pytest.mark.feature("chunked-prefill")
def test_long_prompt_stops_at_the_model_length(tp1: dict[str, Any]) -> None:
    (long_out,) = tp1["batches"][2]
    assert long_out["prompt_len"] > 32  # longer than one prefill chunk
    assert long_out["prompt_len"] + len(long_out["tokens"]) == MAX_MODEL_LEN
    assert long_out["finish_reason"] == "length"


@pytest.mark.sweep
def test_engine_ran_through_the_plugin(tp1: dict[str, Any]) -> None:
    print(f"engine start {tp1['engine_start_seconds']:.1f}s, "
          f"{tp1['tokens_per_second']:.0f} tokens/s")  # fmt: skip
    # "pending": the target module is never imported in this (front-end) process
    assert set(tp1["patches"].values()) <= {"applied", "out-of-range", "pending"}, tp1["patches"]
    served = r"compiled kernels; RMSNorm, SiluAndMul, RotaryEmbedding(, \w+)* and attention run"
    assert re.search(served, tp1["log"]), "the engine did not run on the compiled ops"
    assert "scheduling with NPUScheduler" in tp1["log"], "the platform's scheduler was not used"


@pytest.mark.feature("tp2")
def test_tensor_parallel_2_equals_tp1(
    tp1: dict[str, Any], tiny_model: Path, tmp_path: Path
) -> None:
    tp2 = run_llm(tiny_model, tmp_path, tensor_parallel_size=2, distributed_executor_backend="mp")
    assert greedy_tokens(tp2) == greedy_tokens(tp1)
