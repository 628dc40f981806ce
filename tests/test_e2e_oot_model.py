"""An out-of-tree architecture, registered by the plugin's general plugin, served by vLLM.

The tiny Llama's config names the plugin's architecture; HF transformers still loads it
as a Llama (model_type "llama") and is the oracle for vLLM's tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from e2e import FIRST, run_spec

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

ARCH = "AscendCompatLlamaForCausalLM"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def oot_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oot") / "model"
    shutil.copytree(tiny_model, path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = [ARCH]
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def oot_run(oot_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    batch = {"prompts": FIRST, "sampling": {"max_tokens": MAX_TOKENS}}
    return run_spec(oot_model, tmp_path_factory.mktemp("oot-run"), [batch])


@pytest.mark.feature("oot-model")
def test_out_of_tree_model_serves_hf_tokens(oot_run: dict[str, Any], oot_model: Path) -> None:
    from oracles import hf_greedy

    assert f"built out-of-tree model {ARCH}" in oot_run["log"], "vLLM did not build the OOT class"
    got = [out["tokens"] for out in oot_run["batches"][0]]
    assert got == hf_greedy(oot_model, FIRST, MAX_TOKENS)
