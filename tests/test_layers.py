"""vLLM's CustomOp layers dispatch to the plugin's ops on the real vLLM release."""

from __future__ import annotations

import pytest
from conftest import check_python

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
