"""Pipeline parallel 2 (multiprocessing executor) through the plugin in CPU mode equals PP=1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import GREEDY, greedy_tokens, run_spec

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]


@pytest.mark.feature("pipeline-parallel")
def test_pipeline_parallel_2_equals_pp1(
    tp1: dict[str, Any], tiny_model: Path, tmp_path: Path
) -> None:
    """The greedy batches only: they are what is compared, and on 0.9.2 and 0.11.0 vLLM's
    runner re-emits prompt logprobs of a request that rejoins the batch, which PP causes."""
    pp2 = run_spec(
        tiny_model, tmp_path, GREEDY, pipeline_parallel_size=2, distributed_executor_backend="mp"
    )
    print(f"PP=2 engine start {pp2['engine_start_seconds']:.1f}s, "
          f"{pp2['tokens_per_second']:.0f} tokens/s")  # fmt: skip
    assert pp2["log"].count("vllm-ascend-compat worker on") == 2, "not two pipeline stages"
    assert greedy_tokens(pp2) == greedy_tokens(tp1)
