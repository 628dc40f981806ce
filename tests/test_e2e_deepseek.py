"""DeepSeek-V3 through the plugin in CPU mode: MLA attention and DeepSeek MoE, against HF.

The tiny model (tests/tiny_models.py) has MLA with a q LoRA, YaRN, one dense layer, two
MoE layers with grouped sigmoid routing, a correction bias and a shared expert. The first
batch mixes prompt lengths, shares a prefix and outgrows the prefill chunk; the second
reuses the cached prefix, so prefill reads cached latent rows. Greedy tokens must equal
HF transformers' own DeepSeek-V3 in float32, logprobs within 1e-4; TP=2 and TP=2 with
the experts sharded (expert parallelism) must give the same tokens. In NPU mode on the
emulated device (bfloat16, block size 128), the logprobs along HF's greedy paths (teacher
forced, through prefill) and along vLLM's own decoded paths must be within HF's own
bfloat16 error.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from e2e import FIRST, SECOND, run_spec
from oracles import check_scored, hf_greedy, hf_greedy_ids, hf_log_softmax, hf_own_error
from tiny_models import build_arch

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

MAX_TOKENS = 16
BATCHES = [
    {"prompts": FIRST, "sampling": {"max_tokens": MAX_TOKENS, "logprobs": 1}},
    {"prompts": SECOND, "sampling": {"max_tokens": MAX_TOKENS, "logprobs": 1}},
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_arch(tmp_path_factory.mktemp("deepseek") / "model", "deepseek_v3")


@pytest.fixture(scope="module")
def tp1(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_spec(model, tmp_path_factory.mktemp("tp1"), BATCHES, mode="cpu")


def tokens(run: dict[str, Any]) -> list[list[int]]:
    return [out["tokens"] for batch in run["batches"] for out in batch]


@pytest.mark.sweep  # every release: the MLA interface drifts between anchors (0.16, 0.21)
@pytest.mark.feature("arch-deepseek-v3")
def test_greedy_tokens_and_logprobs_equal_hf(tp1: dict[str, Any], model: Path) -> None:
    prompts = [p for batch in BATCHES for p in batch["prompts"]]
    want = hf_greedy(model, prompts, MAX_TOKENS)
    got = tokens(tp1)
    same = sum(g == w for g, w in zip(got, want, strict=True))
    print(f"deepseek_v3: {same}/{len(prompts)} sequences equal HF")
    for g, w, p in zip(got, want, prompts, strict=True):
        assert g == w, f"prompt {p[:40]!r}: vLLM {g} vs HF {w}"
    outputs = [out for batch in tp1["batches"] for out in batch]
    assert all(out["num_cached_tokens"] >= 16 for out in tp1["batches"][1]), "no prefix hit"
    sequences = [out["prompt_token_ids"] + out["tokens"] for out in outputs]
    worst = 0.0
    for out, hf in zip(outputs, hf_log_softmax(model, sequences), strict=True):
        start = out["prompt_len"] - 1
        for i, (token, row) in enumerate(zip(out["tokens"], out["logprobs"], strict=True)):
            logprob = next(lp for t, lp, _ in row if t == token)
            worst = max(worst, abs(logprob - float(hf[start + i, token])))
    print(f"deepseek_v3: worst logprob error {worst:.2e}; "
          f"engine start {tp1['engine_start_seconds']:.1f}s")  # fmt: skip
    assert worst < 1e-4


@pytest.mark.feature("arch-deepseek-v3")
@pytest.mark.parametrize("expert_parallel", [False, True], ids=["tp2", "tp2-ep"])
def test_tensor_parallel_2_equals_tp1(
    tp1: dict[str, Any], model: Path, tmp_path: Path, expert_parallel: bool
) -> None:
    """Heads split across the two ranks; the experts split by their intermediate size, or
    (expert parallelism) four whole experts on each rank."""
    run = run_spec(
        model, tmp_path, BATCHES, mode="cpu", tensor_parallel_size=2,
        distributed_executor_backend="mp", enable_expert_parallel=expert_parallel,
    )  # fmt: skip
    assert tokens(run) == tokens(tp1)


NPU_CONFIG: dict[str, Any] = {
    "dtype": "bfloat16",
    "block_size": 128,
    "max_model_len": 256,
    "max_num_batched_tokens": 64,
    "gpu_memory_utilization": 0.05,  # of the emulated 16 GiB
}


@pytest.mark.feature("deepseek-v3-npu")
def test_npu_mode_logprobs_are_within_hf_own_bfloat16_error(model: Path, tmp_path: Path) -> None:
    """One engine in NPU mode. Teacher forced: HF's float32 greedy paths as prompts, every
    position scored by the chunked prefill within HF's own bfloat16 error, largest and mean.
    Then free-running decode (the absorbed latent attention): in bfloat16 a token's expert
    choice flips now and then, in HF's own run as in any, moving that one position by more
    than HF's largest error elsewhere; the median ignores such flips, and a wrong decode
    moves every position: the median |error| must be within HF's own mean."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = [tokenizer(p).input_ids for p in FIRST]
    paths = [p + g for p, g in zip(ids, hf_greedy_ids(model, ids, MAX_TOKENS), strict=True)]
    rows = hf_log_softmax(model, paths)
    tolerance = hf_own_error(model, "bfloat16", paths, rows)
    decode = {"prompts": FIRST, "sampling": {"max_tokens": MAX_TOKENS, "logprobs": 1}}
    teacher = {"prompts": paths, "sampling": {"max_tokens": 1, "prompt_logprobs": 1}}
    run = run_spec(model, tmp_path, [decode, teacher], mode="npu", **NPU_CONFIG)
    assert run["device_type"] == "npu"
    prefill = []
    for path, out, row in zip(paths, run["batches"][1], rows, strict=True):
        assert out["prompt_token_ids"] == path
        scored = list(enumerate(out["prompt_logprobs"]))[1:]
        prefill += check_scored(path, scored, row, tolerance["max"], "prefill")
    decoded_paths = [i + out["tokens"] for i, out in zip(ids, run["batches"][0], strict=True)]
    decoded = []
    for i, out, path, row in zip(
        ids, run["batches"][0], decoded_paths, hf_log_softmax(model, decoded_paths), strict=True
    ):
        for j, entries in enumerate(out["logprobs"]):
            got = next(lp for t, lp, _ in entries if t == path[len(i) + j])
            decoded.append(abs(got - float(row[len(i) + j - 1][path[len(i) + j]])))
    mean, median = statistics.mean(prefill), statistics.median(decoded)
    print(f"deepseek_v3 npu bfloat16: prefill {len(prefill)} logprobs, max |error| "
          f"{max(prefill):.4f}, mean {mean:.5f}; decode {len(decoded)}, median {median:.5f}, "
          f"max {max(decoded):.4f}; HF's own: max {tolerance['max']:.4f}, "
          f"mean {tolerance['mean']:.5f}")  # fmt: skip
    assert mean <= tolerance["mean"], f"prefill mean |error| {mean} vs HF's own {tolerance}"
    assert median <= tolerance["mean"], f"decode median |error| {median} vs HF's own {tolerance}"
