"""Shared pieces of the end-to-end tests: the tiny model, prompts, and running vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import TESTS_DIR, clean_env

MAX_MODEL_LEN = 256
CHUNK = 32  # max_num_batched_tokens: long prompts are prefilled in several steps
BLOCK = 16
PREFIX = "Prefix caching reuses the blocks of prompts that share a beginning. " * 2

# First batch: mixed lengths, a shared prefix, a prompt longer than the chunk size.
FIRST = [
    "The quick brown fox",
    "Once upon a time there was a small model that generated text.",
    PREFIX + "Greedy decoding",
    PREFIX + "Tensor parallel",
    "Numbers like 1 2 3 4 5 6 7 8 9 10 and words like alpha beta gamma. " * 3,
    "A",
]
# Second batch: reuses the first batch's cached prefix while prefilling in chunks.
SECOND = [PREFIX + "Chunked prefill splits long prompts", PREFIX + "Greedy decoding"]
# Reaches the model length (EOS ignored): the prompt plus max_tokens exceed MAX_MODEL_LEN.
LONG = ["Ascend NPUs run large language models with vLLM. " * 12]
MAX_TOKENS = 200

LLM_ARGS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": MAX_MODEL_LEN,
    "enable_prefix_caching": True,
    "enable_chunked_prefill": True,
    "max_num_batched_tokens": CHUNK,
    "max_num_seqs": 8,  # 0.9.2 requires max_num_seqs <= max_num_batched_tokens
    "block_size": BLOCK,
    "seed": 0,
    "disable_log_stats": False,  # the prefix-cache counters are read back
}


# The greedy batches every engine run generates (their tokens are compared across runs).
GREEDY = [
    {"prompts": FIRST, "sampling": {"ignore_eos": False}},
    {"prompts": SECOND, "sampling": {"ignore_eos": False}},
    {"prompts": LONG, "sampling": {"ignore_eos": True}},
]
# Sampling outputs checked against HF on the same engine run: the top-5 logprobs of each
# generated token and of each prompt token, and beam search.
TOP_LOGPROBS = 5
LOGPROBS = {
    "prompts": FIRST[:3],
    "sampling": {
        "max_tokens": 8,
        "ignore_eos": True,
        "logprobs": TOP_LOGPROBS,
        "prompt_logprobs": TOP_LOGPROBS,
    },
}
# length_penalty 0 ranks beams by their summed logprob, as HF does while no beam has
# finished; vLLM's default divides by the length, which differs for a beam ending in EOS.
BEAM = {"beam_width": 3, "max_tokens": 8, "ignore_eos": True, "length_penalty": 0.0}
BEAM_SEARCH = {"kind": "beam_search", "prompts": FIRST[:2], "beam": BEAM}


def run_spec(
    model: Path, tmp: Path, batches: list[dict[str, Any]], timeout: float = 600, **llm: Any
) -> dict[str, Any]:
    """Run ``batches`` (see run_llm.py) through the plugin in CPU mode, in a fresh process."""
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({
        "model": str(model), "batches": batches, "max_tokens": MAX_TOKENS,
        "llm": {**LLM_ARGS, **llm},
    }))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(TESTS_DIR / "run_llm.py"), str(spec)],
        capture_output=True, text=True, timeout=timeout, cwd=tmp,
        env=clean_env(VLLM_ASCEND_COMPAT_CPU="1", HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return {**json.loads(lines[-1][len("RESULT ") :]), "log": proc.stdout + proc.stderr}


def run_llm(model: Path, tmp: Path, timeout: float = 600, **llm: Any) -> dict[str, Any]:
    """The greedy batches (FIRST, SECOND, LONG), then the logprobs and beam-search batches."""
    return run_spec(model, tmp, [*GREEDY, LOGPROBS, BEAM_SEARCH], timeout, **llm)


def greedy_tokens(run: dict[str, Any]) -> list[list[int]]:
    """The tokens of the greedy batches of ``run``, prompt by prompt (FIRST + SECOND + LONG)."""
    return [out["tokens"] for batch in run["batches"][: len(GREEDY)] for out in batch]
