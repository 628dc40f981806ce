"""Architectures beyond Llama through the plugin in CPU mode, token-exact against HF.

Each tiny model carries its architecture's own feature (see TINY_ARCHITECTURES):
Qwen2's q/k/v bias, Qwen3's q/k norm, Mistral's sliding window, Gemma-2's attention and
final logit soft-capping with a window on alternate layers, Mixtral's experts (4, top-2).
One engine start per architecture; the prompts outgrow the windows and the prefill chunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e import FIRST, PREFIX, run_spec
from oracles import hf_greedy, worst_logprob_error
from tiny_models import build_arch

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

ARCHITECTURES = [
    pytest.param("qwen2", marks=pytest.mark.feature("arch-qwen2")),
    pytest.param("qwen3", marks=pytest.mark.feature("arch-qwen3")),
    pytest.param("mistral", marks=pytest.mark.feature("arch-mistral")),
    pytest.param("gemma2", marks=pytest.mark.feature("arch-gemma2")),
    pytest.param("mixtral", marks=pytest.mark.feature("arch-moe")),
]
PROMPTS = [FIRST[0], FIRST[1], FIRST[4], PREFIX + "Greedy decoding"]
MAX_TOKENS = 24


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_tokens_and_logprobs_equal_hf(arch: str, tmp_path: Path) -> None:
    """Greedy tokens equal HF's; each token's logprob equals HF's log_softmax (within 1e-4),
    which also checks what greedy cannot see: Gemma-2's final soft cap (a monotonic map)."""
    model = build_arch(tmp_path / arch, arch)
    batch = {"prompts": PROMPTS, "sampling": {"max_tokens": MAX_TOKENS, "logprobs": 1}}
    run = run_spec(model, tmp_path, [batch])
    outputs = run["batches"][0]
    got = [out["tokens"] for out in outputs]
    want = hf_greedy(model, PROMPTS, MAX_TOKENS)
    for g, w, p in zip(got, want, PROMPTS, strict=True):
        assert g == w, f"{arch}, prompt {p[:40]!r}: vLLM {g} vs HF {w}"
    worst = worst_logprob_error(model, outputs)
    print(f"{arch}: {sum(map(len, got))} tokens equal HF; worst logprob error {worst:.2e}; "
          f"engine start {run['engine_start_seconds']:.1f}s")  # fmt: skip
    assert worst < 1e-4
