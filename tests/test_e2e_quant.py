"""Quantization method "ascend" (W8A16) end to end: the tiny Llama quantized by
``python -m vllm_ascend_compat.quantize``, served by vLLM through the plugin in CPU mode.

One engine start runs the same greedy batch twice ("two runs" = two ``generate`` calls
in one engine, prefix caching off so the second recomputes everything). Checked:
- the tokens equal HF transformers' greedy decoding of the *dequantized* weights
  (``q * scale`` in float32: what the kernel computes, so an exact oracle), and each
  token's logprob equals HF's within float32 noise;
- each token's logprob is within FLOAT_TOLERANCE of the *float* model's (HF, teacher
  forced on the same tokens): the error the int8 weights themselves introduce;
- both runs give identical tokens, and logprobs equal to float32 rounding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env
from e2e import FIRST, run_spec

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

MAX_TOKENS = 16
GREEDY = {
    "prompts": FIRST,
    "sampling": {"max_tokens": MAX_TOKENS, "ignore_eos": True, "logprobs": 1},
}
DEQUANTIZED_TOLERANCE = 1e-4  # float32 noise: as the float model's logprobs against HF
# int8 per-channel rounding moves each weight by at most scale/2 (0.4% of its row's max).
# On the tiny random Llama (flat distributions: the top token's logprob is about -2.3)
# that moves a token's logprob by 0.046 nats on average, 0.144 at most (measured over
# 96 tokens; the greedy tokens of the two models agree on 69). Twice that, in nats:
FLOAT_TOLERANCE = 0.3  # any token
FLOAT_MEAN_TOLERANCE = 0.1  # averaged over the tokens
# Two runs give the same tokens; their logprobs are bitwise equal on some lines (0.13,
# 0.27, 0.32) and differ by float32 rounding on others (at most 4.3e-6 measured).
RERUN_TOLERANCE = 1e-5


def _dequantize(quantized: Path, target: Path) -> None:
    """The float checkpoint HF loads as the oracle: ``q * scale`` in float32, no quant config."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(quantized, target)
    for shard in target.glob("*.safetensors"):
        tensors = load_file(shard)
        scales = {name for name in tensors if name.endswith(".weight_scale")}
        for name in scales:
            weight = name.removesuffix("_scale")
            tensors[weight] = tensors[weight].float() * tensors.pop(name).unsqueeze(1)
        save_file(tensors, shard, metadata={"format": "pt"})
    config = json.loads((target / "config.json").read_text())
    del config["quantization_config"]
    (target / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant")
    quantized = root / "w8a16"
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_ascend_compat.quantize", str(tiny_model), str(quantized)],
        capture_output=True, text=True, env=clean_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quantized 14 weights" in proc.stdout, proc.stdout  # 7 linear layers x 2 layers
    _dequantize(quantized, root / "dequantized")
    return {"float": tiny_model, "quantized": quantized, "dequantized": root / "dequantized"}


@pytest.fixture(scope="module")
def run(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_spec(
        models["quantized"], tmp_path_factory.mktemp("quant-run"), [GREEDY, GREEDY],
        enable_prefix_caching=False,
    )  # fmt: skip


def _token_logprobs(out: dict[str, Any]) -> list[float]:
    """The logprob of each generated token (its own row among the returned ones)."""
    return [
        next(lp for token, lp, _ in rows if token == chosen)
        for chosen, rows in zip(out["tokens"], out["logprobs"], strict=True)
    ]


def _hf_token_logprobs(model: Path, out: dict[str, Any]) -> list[float]:
    from oracles import hf_log_softmax

    prompt, tokens = out["prompt_token_ids"], out["tokens"]
    (log_probs,) = hf_log_softmax(model, [prompt + tokens])
    return [log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens)]


@pytest.mark.feature("quantization-ascend")
def test_the_engine_loaded_int8_weights(run: dict[str, Any]) -> None:
    assert "quantization=ascend" in run["log"], "vLLM did not load the ascend quantization"
    assert all(len(out["tokens"]) == MAX_TOKENS for out in run["batches"][0])


@pytest.mark.feature("quantization-ascend")
def test_tokens_equal_hf_on_the_dequantized_weights(
    run: dict[str, Any], models: dict[str, Path]
) -> None:
    from oracles import hf_greedy_ids

    first = run["batches"][0]
    prompts = [out["prompt_token_ids"] for out in first]
    oracle = hf_greedy_ids(models["dequantized"], prompts, MAX_TOKENS, ignore_eos=True)
    worst = 0.0
    for out, want in zip(first, oracle, strict=True):
        assert out["tokens"] == want, f"vLLM {out['tokens']} vs HF (dequantized) {want}"
        for got, hf in zip(
            _token_logprobs(out), _hf_token_logprobs(models["dequantized"], out), strict=True
        ):
            worst = max(worst, abs(got - hf))
    print(f"max |logprob - HF dequantized|: {worst:.2e}")
    assert worst <= DEQUANTIZED_TOLERANCE


@pytest.mark.feature("quantization-ascend")
def test_logprobs_within_tolerance_of_the_float_model(
    run: dict[str, Any], models: dict[str, Path]
) -> None:
    errors = [
        abs(got - want)
        for out in run["batches"][0]
        for got, want in zip(
            _token_logprobs(out), _hf_token_logprobs(models["float"], out), strict=True
        )
    ]
    mean = sum(errors) / len(errors)
    print(f"|logprob - HF float| over {len(errors)} tokens: max {max(errors):.3f}, mean {mean:.3f}")
    assert max(errors) > 0, "the float model's logprobs exactly: the weights were not quantized"
    assert max(errors) <= FLOAT_TOLERANCE
    assert mean <= FLOAT_MEAN_TOLERANCE


@pytest.mark.feature("quantization-ascend")
def test_two_runs_are_identical(run: dict[str, Any]) -> None:
    first, second = run["batches"]
    assert [o["tokens"] for o in first] == [o["tokens"] for o in second]
    drift = max(
        abs(a - b)
        for x, y in zip(first, second, strict=True)
        for a, b in zip(_token_logprobs(x), _token_logprobs(y), strict=True)
    )
    print(f"max |logprob run 1 - run 2|: {drift:.1e}")
    assert drift <= RERUN_TOLERANCE
