"""The unquantized MoE experts in plain torch, registered with ``CustomOp.register_oot``.

vLLM's ``FusedMoE`` hands the expert computation to ``UnquantizedFusedMoEMethod``, whose
kernels are Triton or vLLM's own CPU ops, neither of which exists on this platform. The
subclass routes as HF transformers does (softmax or sigmoid scores, DeepSeek's grouped
top-k with its score correction bias, renormalization, the routed scaling factor) and
runs the experts as two grouped matmuls over the tokens sorted by expert, with no host
sync: the plugin's ``grouped_matmul`` op. It enters where each release calls it:

- up to 0.13: ``apply`` calls ``forward``, which dispatches to ``forward_oot`` (0.9.2 and
  0.11 pass the routing settings as arguments; they are the layer's own attributes);
- 0.18+: the method declares itself monolithic, so the MoE runner passes the router
  logits to ``apply_monolithic`` instead of routing with vLLM's router, whose top-k is a
  compiled vLLM op.

Shared experts and the dense first layers are vLLM's own modules around this one.
"""

from __future__ import annotations

from typing import Any

import torch

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
            f"scoring function {layer.scoring_func!r}": layer.scoring_func not in SCORING_FUNCS,
            "a custom routing function": layer.custom_routing_function is not None,
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
        topk_weights, topk_ids = select_experts(layer, router_logits)
        return run_experts(
            x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids, layer.expert_map
        )


SCORING_FUNCS = ("softmax", "sigmoid")


def select_experts(layer: Any, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert ids and float32 weights per token, as HF computes them: the experts
    chosen on the scores plus DeepSeek's correction bias, if any (within the best
    ``topk_group`` groups, under grouped top-k), weighted by the unbiased scores."""
    logits = router_logits.float()
    scores = logits.sigmoid() if layer.scoring_func == "sigmoid" else logits.softmax(dim=-1)
    bias = layer.e_score_correction_bias
    choice = scores if bias is None else scores + bias.float()
    if layer.use_grouped_topk:
        tokens, experts = choice.shape
        grouped = choice.view(tokens, layer.num_expert_group, -1)
        if bias is None:  # DeepSeek V2: a group scores its best expert
            group_scores = grouped.amax(dim=-1)
        else:  # V3: its best two
            group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
        best = group_scores.topk(layer.topk_group, dim=-1, sorted=False)[1]
        kept = torch.zeros_like(group_scores).scatter_(1, best, 1.0).bool()
        choice = grouped.masked_fill(~kept.unsqueeze(-1), 0.0).view(tokens, experts)
    topk_ids = choice.topk(layer.top_k, dim=-1, sorted=False)[1]
    topk_weights = scores.gather(1, topk_ids)
    if layer.renormalize:
        topk_weights /= topk_weights.sum(dim=-1, keepdim=True) + 1e-20
    return topk_weights * getattr(layer, "routed_scaling_factor", 1.0), topk_ids


def run_experts(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    expert_map: torch.Tensor | None,
) -> torch.Tensor:
    """The weighted sum of each token's experts' gated MLPs, as two grouped matmuls.

    Every (token, slot) pair is sorted by expert; under expert parallelism ``expert_map``
    maps global ids to this rank's (-1 for another rank's), whose pairs sort last, past
    the final group end, where the grouped matmuls leave their rows alone."""
    if expert_map is not None:
        topk_ids = expert_map[topk_ids]
    num_experts, top_k = w13.shape[0], topk_ids.shape[1]
    expert = topk_ids.flatten().long()
    expert = torch.where(expert < 0, num_experts, expert)
    order = expert.argsort(stable=True)
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=x.device)
    counts.scatter_add_(0, expert, torch.ones_like(expert))
    group_ends = counts[:num_experts].cumsum(0)
    token = order // top_k
    rows = x[token]
    gate_up = rows.new_empty(rows.shape[0], w13.shape[1])
    torch.ops._C_ascend_compat.grouped_matmul(gate_up, rows, w13, group_ends)
    hidden = rows.new_empty(rows.shape[0], w13.shape[1] // 2)
    torch.ops._C_ascend_compat.silu_and_mul(hidden, gate_up)
    weights = topk_weights.flatten()[order]
    if expert_map is None:
        down = rows.new_empty(rows.shape)
    else:  # another rank's rows stay zero and weigh nothing
        down = torch.zeros_like(rows)
        weights = weights * (expert[order] < num_experts)
    torch.ops._C_ascend_compat.grouped_matmul(down, hidden, w2, group_ends)
    out = torch.zeros_like(x)
    return out.index_add_(0, token, down * weights.unsqueeze(1).to(x.dtype))
