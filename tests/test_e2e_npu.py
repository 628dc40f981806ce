"""NPU mode end to end on the EMULATED npu device, and CPU mode in the NPU configuration.

Under ``VLLM_ASCEND_COMPAT_EMULATED_NPU=1`` a plain ``LLM(...)`` or ``vllm serve`` runs NPU
mode: the platform with device type ``npu``, the PrivateUse1 kernels of
``csrc/npu_kernels.cpp`` redispatching to torch_npu's ops, and the NPU attention path, with
every op checking torch_npu's preconditions (emulator/README.md). The configuration is the
one Ascend users run: bfloat16 or float16, block size 128, chunked prefill and prefix
caching, TP=2 and PP=2 over the emulated ``hccl`` group. The emulator cannot know the real device's
numerics, so the oracle is HF transformers in float32 on the same weights, within the
error HF itself makes in the dtype (see the ``hf`` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e import PREFIX, assert_streamed_chat_arrives, post, run_spec, serve, token_ids
from oracles import check_scored, hf_own_error, top2_margin

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

BLOCK = 128  # what NPU mode picks by default; the fused prefill takes multiples of 128
CHUNK = 64  # max_num_batched_tokens: the long prompts prefill in several chunks
SHARED = PREFIX * 5  # 140 tokens: one full 128-token block that the second batch reuses
MAX_TOKENS = 48
FIRST = [
    "The quick brown fox",
    "Once upon a time there was a small model that generated text.",
    SHARED + "Greedy decoding",
    "Numbers like 1 2 3 4 5 6 7 8 9 10 and words like alpha beta gamma. " * 3,  # > CHUNK
]
SECOND = [SHARED + "Chunked prefill splits long prompts"]
CONFIG: dict[str, Any] = {
    "block_size": BLOCK,
    "max_model_len": 512,
    "max_num_batched_tokens": CHUNK,
    "gpu_memory_utilization": 0.05,  # of the emulated 16 GiB, in host memory, per worker
}

# The tolerance, per dtype, is what HF transformers itself makes of that dtype: its own run
# in bfloat16 or float16 (weights and activations rounded; bfloat16 keeps 8 significant bits,
# float16 11) against its float32 run, on the same weights and token paths. The plugin's
# logprobs may be no further from float32 than that, each (HF's largest error) and on
# average (HF's mean error). Measured on vLLM 0.11.0 (torch 2.13), largest / mean |error|:
# HF's own bfloat16 0.51 / 0.058, float16 0.13 / 0.011; the plugin on the emulated NPU in
# bfloat16 at TP=2 0.30 / 0.045, in float16 at PP=2 0.035 / 0.0056; CPU mode in bfloat16
# 0.30 / 0.049. The emulator's kernels accumulate in float32, as the real ones do.

# (mode, dtype, tensor parallel size, pipeline parallel size): the runs, one engine each.
# Three engines cover both dtypes, TP=2 and PP=2 over the emulated hccl group, and CPU mode;
# the server below runs NPU mode at TP=1.
RUNS = [
    ("npu", "bfloat16", 2, 1),
    ("npu", "float16", 1, 2),
    ("cpu", "bfloat16", 1, 1),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with 64-wide heads (4 query, 2 KV: GQA that TP=2 splits) and room for
    prompts longer than a block."""
    from vllm_ascend_compat.tiny_model import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-llama-512"), "llama",
        hidden_size=256, num_heads=4, num_kv_heads=2, max_positions=512,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hf(model: Path) -> dict[str, Any]:
    """HF in float32: each prompt's ids, its greedy tokens, and the log-softmax along that
    path (row i scores token i + 1)."""
    from oracles import hf_greedy_ids, hf_log_softmax
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = FIRST + SECOND
    ids = [tokenizer(p).input_ids for p in prompts]
    greedy = hf_greedy_ids(model, ids, MAX_TOKENS, ignore_eos=True)
    paths = [p + g for p, g in zip(ids, greedy, strict=True)]
    rows = hf_log_softmax(model, paths)
    return {
        prompt: {"ids": i, "greedy": g, "path": path, "rows": r}
        for prompt, i, g, path, r in zip(prompts, ids, greedy, paths, rows, strict=True)
    }


@pytest.fixture(scope="module")
def tolerance(model: Path, hf: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per dtype, HF's own largest and mean error in it, over FIRST's paths (see above)."""
    return {
        dtype: hf_own_error(model, dtype, [hf[p]["path"] for p in FIRST],
                             [hf[p]["rows"] for p in FIRST])
        for dtype in ("bfloat16", "float16")
    }  # fmt: skip


@pytest.fixture(scope="module", params=RUNS, ids=lambda r: f"{r[0]}-{r[1]}-tp{r[2]}-pp{r[3]}")
def run(
    request: pytest.FixtureRequest,
    model: Path,
    hf: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """One engine: greedy FIRST, then SECOND (its shared block cached), each decoded token
    with its logprob; then HF's greedy paths fed back as prompts and scored by prompt
    logprobs (teacher forcing, through the prefill path)."""
    mode, dtype, tp, pp = request.param
    greedy = {"sampling": {"ignore_eos": True, "max_tokens": MAX_TOKENS, "logprobs": 1}}
    teacher = {
        "prompts": [hf[p]["path"] for p in FIRST],
        "sampling": {"max_tokens": 1, "prompt_logprobs": 1},
    }
    result = run_spec(
        model,
        tmp_path_factory.mktemp(f"{mode}-{dtype}-tp{tp}-pp{pp}"),
        [{"prompts": FIRST, **greedy}, {"prompts": SECOND, **greedy}, teacher],
        mode=mode,
        **{**CONFIG, "dtype": dtype, "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
           "distributed_executor_backend": "mp" if tp * pp > 1 else None},
    )  # fmt: skip
    return {**result, "mode": mode, "dtype": dtype, "tp": tp, "pp": pp}


def test_the_engine_ran_in_the_mode_asked(run: dict[str, Any]) -> None:
    assert run["device_type"] == run["mode"]
    workers = [line for line in run["log"].splitlines() if "vllm-ascend-compat worker on" in line]
    assert len(workers) == run["tp"] * run["pp"], workers
    for rank, line in enumerate(sorted(workers, key=lambda w: w.split(" on ")[1])):
        where = f"npu:{rank}" if run["mode"] == "npu" else "cpu"
        assert f"worker on {where}: compiled kernels" in line, line


def _report(run: dict[str, Any], what: str, errors: list[float], hf_own: dict) -> None:
    """The agreement figures (pytest -s shows them); the mean within HF's own."""
    mean = sum(errors) / len(errors)
    print(f"{run['mode']} {run['dtype']} tp{run['tp']} pp{run['pp']} {what}: {len(errors)} "
          f"logprobs, max |error| {max(errors):.4f}, mean {mean:.5f}; HF's own in "
          f"{run['dtype']}: max {hf_own['max']:.4f}, mean {hf_own['mean']:.5f}")  # fmt: skip
    assert mean <= hf_own["mean"], f"{what}: mean |error| {mean} vs HF's own {hf_own['mean']}"


@pytest.mark.feature("npu-config")
def test_prefill_logprobs_of_hf_paths_are_within_the_dtype_tolerance(
    run: dict[str, Any], hf: dict[str, Any], tolerance: dict[str, dict[str, float]]
) -> None:
    """Teacher forcing: HF's greedy paths as prompts, every position scored by the prefill
    (chunked, over several blocks) against HF's float32 logprobs."""
    errors = []
    for prompt, out in zip(FIRST, run["batches"][2], strict=True):
        path, scored = hf[prompt]["path"], out["prompt_logprobs"]
        assert out["prompt_token_ids"] == path and len(scored) == len(path)
        positions = list(enumerate(scored))[1:]
        errors += check_scored(path, positions, hf[prompt]["rows"],
                                tolerance[run["dtype"]]["max"], repr(prompt[:20]))  # fmt: skip
    _report(run, "prefill", errors, tolerance[run["dtype"]])


@pytest.mark.feature("npu-config")
def test_decoded_tokens_and_logprobs_follow_hf(
    run: dict[str, Any], hf: dict[str, Any], tolerance: dict[str, dict[str, float]], model: Path
) -> None:
    """Free-running greedy decoding, every step: the logprob of the token vLLM chose against
    HF's float32 run along vLLM's own path, and the token is HF's top-1 wherever HF's top-2
    margin exceeds the tolerance (where it does not, either token is right)."""
    from oracles import hf_log_softmax

    outputs = run["batches"][0] + run["batches"][1]
    paths = [hf[p]["ids"] + out["tokens"] for p, out in zip(FIRST + SECOND, outputs, strict=True)]
    errors = []
    for prompt, out, path, rows in zip(
        FIRST + SECOND, outputs, paths, hf_log_softmax(model, paths), strict=True
    ):
        start = len(hf[prompt]["ids"])
        assert len(out["tokens"]) == len(out["logprobs"]) == MAX_TOKENS
        positions = [(start + j, entries) for j, entries in enumerate(out["logprobs"])]
        errors += check_scored(path, positions, rows, tolerance[run["dtype"]]["max"],
                                repr(prompt[:20]))  # fmt: skip
    _report(run, "decode", errors, tolerance[run["dtype"]])


@pytest.mark.feature("npu-config")
def test_the_second_batch_reused_the_cached_block(run: dict[str, Any]) -> None:
    [second] = run["batches"][1]
    assert second["num_cached_tokens"] == BLOCK, second["num_cached_tokens"]


@pytest.mark.feature("npu-server")
def test_the_server_answers_a_completion_and_a_streamed_chat_in_npu_mode(
    model: Path, hf: dict[str, Any], tolerance: dict[str, dict[str, float]], tmp_path: Path
) -> None:
    """``vllm serve`` under the emulator switch, bfloat16: the completion's tokens are HF's
    until a near tie; the streamed chat arrives in pieces and finishes."""
    args = [
        "--served-model-name", "tiny", "--dtype", "bfloat16", "--max-model-len", "512",
        "--enable-prefix-caching", "--enable-chunked-prefill", "--max-num-batched-tokens",
        str(CHUNK), "--max-num-seqs", "8", "--gpu-memory-utilization", "0.05",
    ]  # fmt: skip
    with serve(model, args, tmp_path, mode="npu") as base:
        prompt = FIRST[1]
        body = {
            "model": "tiny", "prompt": prompt, "max_tokens": 16, "temperature": 0,
            "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True,
        }  # fmt: skip
        status, payload = post(base, "/v1/completions", body)
        assert status == 200, payload
        tokens = token_ids(json.loads(payload)["choices"][0]["logprobs"]["tokens"])
        want, rows, start = hf[prompt]["greedy"], hf[prompt]["rows"], len(hf[prompt]["ids"])
        for j, (got, expected) in enumerate(zip(tokens, want[:16], strict=True)):
            if got != expected:
                margin = top2_margin(rows[start - 1 + j])
                assert margin <= tolerance["bfloat16"]["max"], f"token {j}: {margin}"
                break
        assert_streamed_chat_arrives(base, 16)
    log = (tmp_path / "vllm-serve.log").read_text()
    assert "worker on npu:0: compiled kernels" in log
    assert f"(block size {BLOCK})" in log  # not vLLM's 16: no --block-size was given
