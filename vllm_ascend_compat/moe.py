"""The unquantized MoE experts in plain torch, registered with ``CustomOp.register_oot``.

vLLM's ``FusedMoE`` hands the expert computation to ``UnquantizedFusedMoEMethod``, whose
kernels are Triton or vLLM's own CPU ops, neither of which exists on this platform. The
subclass computes the routing (softmax, top-k, renormalize) and each expert's gated MLP
with torch ops, which run on the CPU and, through torch_npu, on an NPU. It enters where
each release calls it:

- up to 0.13: ``apply`` calls ``forward``, which dispatches to ``forward_oot`` (0.9.2 and
  0.11 pass the routing settings as arguments; they are the layer's own attributes);
- 0.18+: the method declares itself monolithic, so the MoE runner passes the router
  logits to ``apply_monolithic`` instead of routing with vLLM's router, whose top-k is a
  compiled vLLM op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

try:  # its own module from 0.13
    from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import (
        UnquantizedFusedMoEMethod,
    )
except ImportError:
    from vllm.model_executor.layers.fused_moe.layer import UnquantizedFusedMoEMethod


class AscendUnquantizedFusedMoEMethod(UnquantizedFusedMoEMethod):
    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """Refuse, once per layer, what the torch experts do not implement."""
        super().process_weights_after_loading(layer)
        activation = getattr(layer.activation, "value", layer.activation)  # an enum from 0.2x
        unsupported = {
            f"activation {activation!r}": activation != "silu",
            f"scoring function {layer.scoring_func!r}": layer.scoring_func != "softmax",
            "grouped top-k": layer.use_grouped_topk,
            "a custom routing function": layer.custom_routing_function is not None,
            "a routing score correction bias": layer.e_score_correction_bias is not None,
            "router weights applied on the input": layer.apply_router_weight_on_input,
            "expert biases": getattr(self.moe, "has_bias", False),  # a field from 0.10
        }
        named = [name for name, present in unsupported.items() if present]
        if named:
            raise NotImplementedError(
                f"vllm-ascend-compat MoE experts do not support {', '.join(named)}"
            )

    def forward_oot(
        self, layer: Any, x: torch.Tensor, router_logits: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        return self.apply_monolithic(layer, x, router_logits)

    @property
    def is_monolithic(self) -> bool:
        return True

    def _select_monolithic(self) -> Any:
        """0.18 binds the monolithic entry in ``__init__``: keep it this class's."""
        return self.apply_monolithic

    def apply_monolithic(
        self, layer: Any, x: torch.Tensor, router_logits: torch.Tensor, input_ids: Any = None
    ) -> torch.Tensor:
        """Route each token to its top-k experts and sum their gated MLPs, weighted."""
        weights = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
        topk_weights, topk_ids = torch.topk(weights, layer.top_k, dim=-1)
        if layer.renormalize:
            topk_weights /= topk_weights.sum(dim=-1, keepdim=True)
        topk_weights = topk_weights.to(x.dtype)
        expert_map = layer.expert_map
        if expert_map is not None:  # expert parallel: global ids to this rank's, -1 elsewhere
            topk_ids = expert_map[topk_ids]
        w13, w2 = layer.w13_weight, layer.w2_weight
        out = torch.zeros_like(x)
        for expert in topk_ids.unique().tolist():
            if expert < 0:
                continue
            token, slot = torch.where(topk_ids == expert)
            gate, up = F.linear(x[token], w13[expert]).chunk(2, dim=-1)
            hidden = F.linear(F.silu(gate) * up, w2[expert])
            out.index_add_(0, token, hidden * topk_weights[token, slot, None])
        return out
