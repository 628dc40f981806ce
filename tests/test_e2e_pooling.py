"""vLLM's LLM.embed through the plugin in CPU mode (a pooling runner), against HF's pooling.

The tiny Llama is served as an embedding model, once with LAST and once with MEAN pooling
(the pooling type is an engine setting). The reference is HF's LlamaModel on the same
weights: the last hidden state after the final norm, pooled the same way, L2-normalized
as vLLM's embedding pooler does by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import FIRST, LONG, MAX_MODEL_LEN, run_spec
from packaging.version import Version

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.feature("pooling"),
    pytest.mark.usefixtures("vllm_release"),
]

PROMPTS = [*FIRST, *LONG]  # one token up to several prefill chunks
TOLERANCE = 1e-4  # max abs difference per component of unit vectors, float32


def _pooling_args(line: str, pooling: str) -> dict[str, Any]:
    """The embedding-model spelling of ``line``: ``task`` up to 0.10, then runner/convert."""
    if Version(line) < Version("0.11.0"):
        return {"task": "embed", "override_pooler_config": {"pooling_type": pooling}}
    return {"runner": "pooling", "convert": "embed", "pooler_config": {"pooling_type": pooling}}


# LAST pooling keeps the e2e defaults (prompts prefilled in chunks, prefix caching): vLLM
# pools the last chunk. MEAN pooling needs whole prompts in one step, so vLLM decides.
WHOLE_PROMPTS = {
    "enable_chunked_prefill": None,
    "enable_prefix_caching": None,
    "max_num_batched_tokens": MAX_MODEL_LEN,
}
ENGINE = {"LAST": {}, "MEAN": WHOLE_PROMPTS}


@pytest.fixture(scope="module", params=list(ENGINE))
def embedded(
    request: pytest.FixtureRequest,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    vllm_release: str,
) -> tuple[str, dict[str, Any]]:
    """One engine per pooling type (an engine setting)."""
    pooling = request.param
    run = run_spec(
        tiny_model,
        tmp_path_factory.mktemp(f"pool-{pooling.lower()}"),
        [{"kind": "embed", "prompts": PROMPTS}],
        **ENGINE[pooling],
        **_pooling_args(vllm_release, pooling),
    )
    return pooling, run


def hf_embeddings(model_path: Path, prompts: list[list[int]], pooling: str) -> list[Any]:
    """HF LlamaModel's final hidden states pooled (last token or mean), L2-normalized."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path).float().eval()
    vectors = []
    with torch.no_grad():
        for ids in prompts:
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
            pooled = hidden[-1] if pooling == "LAST" else hidden.mean(dim=0)
            vectors.append(torch.nn.functional.normalize(pooled, dim=0))
    return vectors


def test_embeddings_equal_hf_pooling(
    embedded: tuple[str, dict[str, Any]], tiny_model: Path
) -> None:
    import torch

    pooling, run = embedded
    (rows,) = run["batches"]
    assert len(rows) == len(PROMPTS)
    expected = hf_embeddings(tiny_model, [row["prompt_token_ids"] for row in rows], pooling)
    worst = 0.0
    for row, want, prompt in zip(rows, expected, PROMPTS, strict=True):
        got = torch.tensor(row["embedding"])
        assert got.shape == want.shape, f"{prompt[:40]!r}: {got.shape} vs HF {want.shape}"
        assert abs(got.norm().item() - 1.0) < TOLERANCE, "vLLM did not normalize"
        diff = (got - want).abs().max().item()
        worst = max(worst, diff)
        assert diff < TOLERANCE, f"{pooling} {prompt[:40]!r}: max |vLLM - HF| = {diff:.2e}"
    lengths = [len(row["prompt_token_ids"]) for row in rows]
    print(f"{pooling} pooling, prompt lengths {lengths}: max |vLLM - HF| = {worst:.2e}, "
          f"engine start {run['engine_start_seconds']:.1f}s")  # fmt: skip
