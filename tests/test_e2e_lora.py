"""A LoRA adapter served through the plugin in CPU mode, token for token against HF transformers
on the base weights with the adapter merged in (one engine start: without, then with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import FIRST, SECOND, run_spec
from lora import RANK, write_adapter, write_merged

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.feature("lora"),
    pytest.mark.usefixtures("vllm_release"),
]

PROMPTS = FIRST + SECOND[:1]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The prompts without the adapter, then with it, through one engine; HF on both models."""
    from oracles import hf_greedy

    tmp = tmp_path_factory.mktemp("lora")
    adapter = write_adapter(tiny_model, tmp / "adapter")
    merged = write_merged(tiny_model, adapter, tmp / "merged")
    sampling = {"max_tokens": MAX_TOKENS, "ignore_eos": False}
    lora = {"name": "tiny", "id": 1, "path": str(adapter)}
    run = run_spec(
        tiny_model, tmp,
        [{"prompts": PROMPTS, "sampling": sampling},
         {"prompts": PROMPTS, "sampling": sampling, "lora": lora}],
        enable_lora=True, max_lora_rank=RANK, max_loras=1,
    )  # fmt: skip
    without, with_lora = ([out["tokens"] for out in batch] for batch in run["batches"])
    return {
        "without": without,
        "with": with_lora,
        "hf_base": hf_greedy(tiny_model, PROMPTS, MAX_TOKENS),
        "hf_merged": hf_greedy(merged, PROMPTS, MAX_TOKENS),
        "log": run["log"],
    }


def _assert_equal(got: list[list[int]], want: list[list[int]], what: str) -> None:
    for tokens, expected, prompt in zip(got, want, PROMPTS, strict=True):
        assert tokens == expected, f"{what}, prompt {prompt[:40]!r}: vLLM {tokens} vs HF {expected}"


def test_adapter_tokens_equal_hf_merged(lora_run: dict[str, Any]) -> None:
    assert "Using PunicaWrapperCPU." in lora_run["log"], "not the platform's punica wrapper"
    _assert_equal(lora_run["with"], lora_run["hf_merged"], "with the adapter")


def test_base_tokens_equal_hf_base(lora_run: dict[str, Any]) -> None:
    _assert_equal(lora_run["without"], lora_run["hf_base"], "without the adapter")


def test_adapter_changes_the_tokens(lora_run: dict[str, Any]) -> None:
    changed = sum(a != b for a, b in zip(lora_run["with"], lora_run["without"], strict=True))
    print(f"the adapter changed {changed}/{len(PROMPTS)} greedy sequences")
    assert changed, "the adapter changed no greedy token: the LoRA path may not have run"
