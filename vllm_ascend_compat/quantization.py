"""Quantization method "ascend": W8A16 linear layers on ``_C_ascend_compat.int8_weight_linear``.

A checkpoint written by :mod:`vllm_ascend_compat.quantize` stores each linear layer's
weight as int8 ``[out, in]``, symmetric per output channel, with its float32 scales in
``<layer>.weight_scale``; its config.json says ``"quantization_config": {"quant_method":
"ascend", "scheme": "w8a16"}``. vLLM finds the config by that name once the general
plugin has registered it (every process). Linear layers run the op (C++ on the CPU,
torch_npu's ``npu_weight_quant_batchmatmul`` on an NPU); embeddings and the LM head stay
in float, as the script leaves them; MoE experts are refused with the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase
from vllm.model_executor.layers.quantization import (
    QUANTIZATION_METHODS,
    register_quantization_config,
)
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig
from vllm.model_executor.utils import set_weight_attrs

NAME = "ascend"
SCHEMES = ("w8a16",)


class AscendQuantConfig(QuantizationConfig):
    """The checkpoint's ``quantization_config``: int8 weights, float activations."""

    def __init__(self, scheme: str) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"quantization 'ascend': scheme {scheme!r} is not one of {SCHEMES}")
        self.scheme = scheme

    def __repr__(self) -> str:
        return f"AscendQuantConfig(scheme={self.scheme!r})"

    def get_name(self) -> Any:
        return NAME

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32, torch.bfloat16, torch.float16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 0  # no CUDA capability involved

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []  # read from config.json's quantization_config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AscendQuantConfig:
        return cls(cls.get_from_keys(config, ["scheme"]))

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> Any:
        if isinstance(layer, LinearBase):
            return AscendW8A16LinearMethod()
        if "MoE" in type(layer).__name__:
            raise NotImplementedError(
                f"quantization 'ascend' has no MoE method: {prefix} ({type(layer).__name__})"
            )
        return None  # embeddings, the LM head, attention: unquantized


class AscendW8A16LinearMethod(LinearMethodBase):
    """int8 weight ``[out, in]`` and float32 ``weight_scale`` ``[out]``, loaded shard by shard
    along the output dimension (merged QKV and gate/up projections included)."""

    def create_weights(
        self,
        layer: torch.nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra_weight_attrs: Any,
    ) -> None:
        rows = sum(output_partition_sizes)
        weight = torch.nn.Parameter(
            torch.empty(rows, input_size_per_partition, dtype=torch.int8), requires_grad=False
        )
        set_weight_attrs(weight, {"input_dim": 1, "output_dim": 0, **extra_weight_attrs})
        layer.register_parameter("weight", weight)
        scale = torch.nn.Parameter(torch.empty(rows, dtype=torch.float32), requires_grad=False)
        set_weight_attrs(scale, {"output_dim": 0, **extra_weight_attrs})
        layer.register_parameter("weight_scale", scale)

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty(rows.shape[0], layer.weight.shape[0], dtype=x.dtype, device=x.device)
        torch.ops._C_ascend_compat.int8_weight_linear(
            out, rows, layer.weight, layer.weight_scale, bias
        )
        return out.view(*x.shape[:-1], -1)


def register() -> None:
    """Make ``quant_method: ascend`` known to vLLM in this process (idempotent)."""
    if NAME not in QUANTIZATION_METHODS:
        register_quantization_config(NAME)(AscendQuantConfig)
