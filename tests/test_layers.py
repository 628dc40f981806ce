"""vLLM's CustomOp layers dispatch to the plugin's ops on the real vLLM release."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import check_python
from packaging.version import Version

from vllm_ascend_compat.patches import ALL

pytestmark = pytest.mark.usefixtures("vllm_release")


def test_layers_are_swapped_in_and_agree_with_vllm_native() -> None:
    check_python(
        """
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding
from vllm.plugins import load_general_plugins
from vllm_ascend_compat import layers, ops

load_general_plugins()  # as every vLLM process does first: the patches (0.9.0's registry)
assert ops.register() == "compiled"
layers.register()
layers.register()  # twice in one process is fine
with set_current_vllm_config(VllmConfig()):
    norm = RMSNorm(64, eps=1e-6)
    act = SiluAndMul()
    rope = RotaryEmbedding(64, 64, 128, 10000, True, torch.float32)
assert type(norm) is layers.AscendRMSNorm and type(act) is layers.AscendSiluAndMul
assert type(rope) is layers.AscendRotaryEmbedding
for layer in (norm, act, rope):  # vLLM dispatches to forward_oot, which runs our ops
    assert layer._forward_method == layer.forward_oot, layer._forward_method
torch.manual_seed(0)
norm.weight.data.uniform_(0.5, 1.5)
x, residual = torch.randn(5, 64), torch.randn(5, 64)
torch.testing.assert_close(norm(x.clone()), norm.forward_native(x.clone()))
got = norm(x.clone(), residual.clone())
want = norm.forward_native(x.clone(), residual.clone())
torch.testing.assert_close(got[0], want[0]); torch.testing.assert_close(got[1], want[1])
y = torch.randn(5, 128)
torch.testing.assert_close(act(y), act.forward_native(y))
positions = torch.randint(0, 128, (5,))
q, k = torch.randn(5, 2 * 64), torch.randn(5, 64)
got = rope(positions, q.clone(), k.clone())
want = rope.forward_native(positions, q.clone(), k.clone())
torch.testing.assert_close(got[0], want[0]); torch.testing.assert_close(got[1], want[1])
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )


@pytest.mark.sweep
def test_an_engine_config_keeps_the_plugin_layers_on(tiny_model: Path, vllm_release: str) -> None:
    """The platform runs every model eager, so vLLM's reason to switch custom ops off (inductor
    compiles them) never holds: under an engine's config the layers still run the plugin's
    ops. 0.9.0 and 0.9.1 set custom_ops to ['none'] first (custom-ops-on-when-eager)."""
    script = f"""
from vllm.config import set_current_vllm_config
from vllm.engine.arg_utils import EngineArgs
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.plugins import load_general_plugins
from vllm_ascend_compat import layers, ops

load_general_plugins()
config = EngineArgs(model={str(tiny_model)!r}, dtype="float32").create_engine_config()
ops.register()
layers.register()
with set_current_vllm_config(config):
    norm = RMSNorm(64, eps=1e-6)
assert type(norm) is layers.AscendRMSNorm
print("ON" if norm._forward_method == norm.forward_oot else "OFF",
      config.compilation_config.custom_ops)
"""
    patched = check_python(script, VLLM_ASCEND_COMPAT_CPU="1")
    assert "\nON " in f"\n{patched}", patched[-2000:]
    patch = next(p for p in ALL if p.id == "custom-ops-on-when-eager")
    if patch.applies_to(Version(vllm_release)):  # the reproducer: off without the patch
        unpatched = check_python(
            script, VLLM_ASCEND_COMPAT_CPU="1", VLLM_ASCEND_COMPAT_DISABLE_PATCHES=patch.id
        )
        assert "\nOFF ['none']" in f"\n{unpatched}", unpatched[-2000:]


LINEAR_WEIGHTS = """
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.layers.linear import UnquantizedLinearMethod
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead, UnquantizedEmbeddingMethod)
from vllm.plugins import load_general_plugins

load_general_plugins()
torch.manual_seed(0)
with set_current_vllm_config(VllmConfig()):
    method, head_method = UnquantizedLinearMethod(), UnquantizedEmbeddingMethod()
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    layer = torch.nn.Module()
    layer.quant_method = method
    weight = torch.randn(48, 64, dtype=dtype)
    layer.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)  # as loaded
    method.process_weights_after_loading(layer)
    x, bias = torch.randn(3, 5, 64, dtype=dtype), torch.randn(48, dtype=dtype)
    got = layer.quant_method.apply(layer, x, bias)
    want = torch.nn.functional.linear(x.double(), weight.double(), bias.double())
    tol = 1e-5 if dtype == torch.float32 else 3e-2 * want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
    print(str(dtype)[6:], "prepacked" if layer.weight.is_mkldnn else "dense",
          type(layer.quant_method).__name__)
    # the LM head: vLLM's class, built bare (its constructor needs a parallel group)
    head = ParallelLMHead.__new__(ParallelLMHead)
    torch.nn.Module.__init__(head)
    head.quant_method = head_method
    head.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    head_method.process_weights_after_loading(head)
    got = head.quant_method.apply(head, x, bias)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
    ids = torch.tensor([0, 47, 3])
    assert torch.equal(head.quant_method.embedding(head, ids), weight[ids])  # tied lookups
    print("lm_head", str(dtype)[6:], "prepacked" if hasattr(head, "packed_weight") else "dense",
          type(head.quant_method).__name__)
"""


@pytest.mark.sweep
def test_unquantized_linear_weights_are_prepacked_for_onednn_in_cpu_mode() -> None:
    """After loading, float32 and bfloat16 weights are oneDNN-prepacked and the layer's
    method applies torch's oneDNN linear; the LM head gets a prepacked copy and keeps its
    weight for lookups; float16 weights stay dense. Same results as F.linear; without the
    patches every weight stays dense."""
    import torch

    patched = check_python(LINEAR_WEIGHTS, VLLM_ASCEND_COMPAT_CPU="1")
    bf16 = "prepacked" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "dense"
    assert "\nfloat32 prepacked PrepackedLinearMethod" in f"\n{patched}", patched[-2000:]
    assert f"\nbfloat16 {bf16}" in f"\n{patched}", patched[-2000:]
    assert "\nfloat16 dense UnquantizedLinearMethod" in f"\n{patched}", patched[-2000:]
    assert "\nlm_head float32 prepacked PrepackedLMHeadMethod" in patched, patched[-2000:]
    assert "\nlm_head float16 dense UnquantizedEmbeddingMethod" in patched, patched[-2000:]
    unpatched = check_python(
        LINEAR_WEIGHTS,
        VLLM_ASCEND_COMPAT_CPU="1",
        VLLM_ASCEND_COMPAT_DISABLE_PATCHES="device-linear-weights,device-lm-head-weights",
    )
    assert "\nfloat32 dense UnquantizedLinearMethod" in f"\n{unpatched}", unpatched[-2000:]
    assert "\nlm_head float32 dense UnquantizedEmbeddingMethod" in unpatched, unpatched[-2000:]


@pytest.mark.e2e  # starts an engine
def test_cpu_mode_attention_reads_the_cache_in_whole_blocks(tiny_model: Path) -> None:
    """The kernels get the cache in the blocks the engine allocates. vLLM 0.12+ splits a
    cache block into the largest kernel block size the backend lists: a listed 1 once made
    every kernel block one token long, which kept decode attention 4x slower and still
    correct, so only the cache's shape shows it."""
    output = check_python(
        textwrap.dedent(f"""
        from vllm import LLM, SamplingParams
        from vllm_ascend_compat.attention import split_kv_cache
        llm = LLM(model={str(tiny_model)!r}, dtype="float32", max_model_len=64,
                  max_num_seqs=2, block_size=16, seed=0)
        llm.generate(["Hello"], SamplingParams(max_tokens=2), use_tqdm=False)
        context = llm.llm_engine.vllm_config.compilation_config.static_forward_context
        for name, layer in context.items():
            cache = layer.kv_cache[0] if isinstance(layer.kv_cache, list) else layer.kv_cache
            print("KERNEL BLOCK", name, split_kv_cache(cache)[0].shape[1])
        """),
        VLLM_ASCEND_COMPAT_CPU="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",  # the engine's layers live in this process
        HF_HUB_OFFLINE="1",
    )
    blocks = [line.split()[-1] for line in output.splitlines() if line.startswith("KERNEL BLOCK")]
    assert blocks and set(blocks) == {"16"}, output
