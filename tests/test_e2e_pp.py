"""Pipeline parallel 2 (multiprocessing executor) through the plugin in CPU mode equals PP=1."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from e2e import (
    GREEDY,
    LOGPROBS,
    assert_logprobs_equal_hf,
    greedy_tokens,
    launch_spec,
    result_of,
    run_spec,
)
from packaging.version import Version

from vllm_ascend_compat.envs import DISABLE_PATCHES
from vllm_ascend_compat.patches import ALL

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

PP2 = {"pipeline_parallel_size": 2, "distributed_executor_backend": "mp"}
ONCE = [p for p in ALL if p.id.startswith("prompt-logprobs-once-per-request")]


@pytest.mark.feature("pipeline-parallel")
def test_pipeline_parallel_2_equals_pp1(
    tp1: dict[str, Any], tiny_model: Path, tmp_path: Path
) -> None:
    """The greedy batches equal PP=1; the logprobs batch equals HF. Under PP a running
    request leaves the batch and rejoins it, which is what the prompt logprobs need to
    survive (``prompt-logprobs-once-per-request`` before 0.12)."""
    pp2 = run_spec(tiny_model, tmp_path, [*GREEDY, LOGPROBS], **PP2)
    print(f"PP=2 engine start {pp2['engine_start_seconds']:.1f}s, "
          f"{pp2['tokens_per_second']:.0f} tokens/s")  # fmt: skip
    assert pp2["log"].count("vllm-ascend-compat worker on") == 2, "not two pipeline stages"
    assert greedy_tokens(pp2) == greedy_tokens(tp1)
    compared = assert_logprobs_equal_hf(pp2["batches"][len(GREEDY)], tiny_model)
    print(f"PP=2: {compared} logprobs equal HF")


@pytest.mark.sweep
def test_prompt_logprobs_once_reproducer(
    tiny_model: Path, tmp_path: Path, vllm_release: str
) -> None:
    """Unpatched, a line in range sends a rejoining request's prompt logprobs again under
    PP: the engine dies detokenizing an uninitialised tensor, or the rows come twice."""
    from vllm.v1.worker.gpu_input_batch import InputBatch

    registers_on_join = "num_prompt_logprobs" in inspect.getsource(InputBatch.add_request)
    once = next((p for p in ONCE if p.applies_to(Version(vllm_release))), None)
    if once is None:
        assert not registers_on_join, "the runner registers them once from 0.12 (PR 29071)"
        return
    assert registers_on_join
    proc = launch_spec(tiny_model, tmp_path, [LOGPROBS], env={DISABLE_PATCHES: once.id}, **PP2)
    result = result_of(proc)
    if result is None:
        log = proc.stdout + proc.stderr
        assert "OverflowError" in log, log[-3000:]
    else:
        rows = [(len(out["prompt_logprobs"]), out["prompt_len"]) for out in result["batches"][0]]
        assert any(got != want for got, want in rows), f"sent once unpatched: {rows}"
