"""vLLM's CustomOp layers on the plugin's ops, registered with ``CustomOp.register_oot``.

vLLM builds ``RMSNorm``, ``SiluAndMul`` and ``RotaryEmbedding`` as usual; the
registry swaps in these subclasses, whose ``forward_oot`` (the method vLLM calls
on an out-of-tree platform) runs ``torch.ops._C_ascend_compat``: the C++ kernels
on the CPU, torch_npu through PrivateUse1 on an NPU. Per-layer hot path: plain
subclass overrides, no wrappers.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor import custom_op
from vllm.model_executor.custom_op import CustomOp
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

from vllm_ascend_compat.moe import AscendUnquantizedFusedMoEMethod

OPS = torch.ops._C_ascend_compat


class AscendRMSNorm(RMSNorm):
    def forward_oot(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        if self.variance_size_override is not None:
            return self.forward_native(x, residual)
        if residual is not None:
            OPS.fused_add_rms_norm(x, residual, self.weight.data, self.variance_epsilon)
            return x, residual
        x = x.contiguous()  # Qwen3's per-head q/k norm passes a strided view of the qkv rows
        out = torch.empty_like(x)
        OPS.rms_norm(out, x, self.weight.data, self.variance_epsilon)
        return out


class AscendSiluAndMul(SiluAndMul):
    def forward_oot(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty((*x.shape[:-1], x.shape[-1] // 2), dtype=x.dtype, device=x.device)
        OPS.silu_and_mul(out, x)
        return out


class AscendRotaryEmbedding(RotaryEmbedding):
    def forward_oot(
        self,
        positions: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,  # batched rotary (up to 0.13): vLLM's path
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if offsets is not None:
            return self.forward_native(positions, query, key, offsets)
        if key is None:
            return self.forward_native(positions, query, key)
        cache: torch.Tensor = getattr(self, "cos_sin_cache")  # noqa: B009  (a buffer)
        if cache.dtype != query.dtype or cache.device != query.device:
            cache = self.cos_sin_cache = cache.to(query.device, dtype=query.dtype)
        OPS.rotary_embedding(positions, query, key, self.head_size, cache, self.is_neox_style)
        return query, key


LAYERS = {
    "RMSNorm": AscendRMSNorm,
    "SiluAndMul": AscendSiluAndMul,
    "RotaryEmbedding": AscendRotaryEmbedding,
    "UnquantizedFusedMoEMethod": AscendUnquantizedFusedMoEMethod,  # torch ops, see moe.py
}


def register() -> list[str]:
    """Register the layers once per process; return the names now served by the plugin."""
    # A class attribute up to 0.14, a module-level dict from 0.15.
    registry = getattr(custom_op, "op_registry_oot", None)
    if registry is None:
        registry = CustomOp.op_registry_oot
    for name, layer in LAYERS.items():
        if registry.get(name) is not layer:
            CustomOp.register_oot(layer, name=name)
    return list(LAYERS)
