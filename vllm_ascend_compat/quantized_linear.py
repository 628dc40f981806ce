"""The linear methods of quantization "ascend", one per msModelSlim scheme.

Apart from the config (quantization.py) because they import vLLM's linear layers: a
process that only registers the method, such as the API server, never needs them (about
0.5 s of imports). Every apply is one or two calls into the ``_C_ascend_compat`` int8 ops
(C++ on the CPU, torch_npu on an NPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm.model_executor.layers.linear import LinearMethodBase, RowParallelLinear
from vllm.model_executor.utils import set_weight_attrs

C = torch.ops._C_ascend_compat


# --- parameters ------------------------------------------------------------------------


def _add(layer: torch.nn.Module, name: str, tensor: torch.Tensor, **attrs: Any) -> None:
    param = torch.nn.Parameter(tensor, requires_grad=False)
    set_weight_attrs(param, attrs)
    layer.register_parameter(name, param)


def _replace(layer: torch.nn.Module, name: str, tensor: torch.Tensor | None) -> None:
    """Swap a loaded parameter for the form the kernels take (None drops it)."""
    delattr(layer, name)
    if tensor is not None:
        layer.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
    else:
        setattr(layer, name, None)


def _load_deq_scale(base: Callable[..., Any]) -> Callable[..., Any]:
    """deq_scale is float32 in bf16 checkpoints and, in fp16 ones, int64 holding the float32
    bit pattern: read both as float32 before the layer's own loader places the shard."""

    def load(param: torch.Tensor, loaded: torch.Tensor, *shard: Any) -> Any:
        if loaded.dtype == torch.int64:
            loaded = loaded.to(torch.int32).view(torch.float32)
        return base(param, loaded, *shard)

    return load


def _load_per_tensor(prefix: str) -> Callable[..., None]:
    """input_scale / input_offset: one value per layer, the same in every shard of a fused
    layer (its shards see the same input)."""

    def load(param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        value = loaded.reshape(-1).to(param.dtype)
        if value.numel() != 1:
            raise ValueError(f"quantization 'ascend': {prefix} must be one value, got {value}")
        if not torch.isnan(param).all() and not torch.equal(param.data, value):
            raise ValueError(
                f"quantization 'ascend': the shards of {prefix.rsplit('.', 1)[0]} have "
                f"different {prefix.rsplit('.', 1)[1]} ({param.item()} and {value.item()}); "
                "a fused layer quantizes its input once"
            )
        param.data.copy_(value)

    return load


class _Int8Linear(LinearMethodBase):
    """The int8 ``[out, in]`` weight every scheme has, and per-channel ``[out, 1]`` float32
    ``weight_scale`` / ``weight_offset``, loaded shard by shard along the output dimension."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # the layer's, for the errors that name it

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
        weight = torch.empty(rows, input_size_per_partition, dtype=torch.int8)
        _add(layer, "weight", weight, input_dim=1, output_dim=0, **extra_weight_attrs)
        for name in ("weight_scale", "weight_offset"):
            per_channel = torch.empty(rows, 1, dtype=torch.float32)
            _add(layer, name, per_channel, output_dim=0, **extra_weight_attrs)


class AscendW8A16LinearMethod(_Int8Linear):
    """W8A16: ``y = x @ ((W + weight_offset) * weight_scale)^T + bias`` (the offset added,
    as CANN's antiquant does and vllm-ascend passes it)."""

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        dtype = layer.params_dtype  # torch_npu takes the scales in the activations' dtype
        offset = layer.weight_offset.reshape(-1)
        _replace(layer, "weight_scale", layer.weight_scale.reshape(-1).to(dtype))
        _replace(layer, "weight_offset", offset.to(dtype) if offset.any() else None)

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty(rows.shape[0], layer.weight.shape[0], dtype=x.dtype, device=x.device)
        C.int8_weight_linear(out, rows, layer.weight, layer.weight_scale, layer.weight_offset, bias)
        return out.view(*x.shape[:-1], -1)


class AscendW8A8LinearMethod(_Int8Linear):
    """Static W8A8: ``x_q = sat(round(x / input_scale + input_offset))`` with one scale and
    offset per layer, then ``y = (x_q @ W^T + quant_bias) * deq_scale``. quant_bias already
    holds the bias and the offset's correction, so the layer's own bias is not added."""

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
        super().create_weights(
            layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
            params_dtype, **extra_weight_attrs,
        )  # fmt: skip
        rows = sum(output_partition_sizes)
        for name in ("input_scale", "input_offset"):
            unset = torch.full((1,), float("nan"), dtype=torch.float32)
            _add(layer, name, unset, weight_loader=_load_per_tensor(f"{self.prefix}.{name}"))
        channel_loader = extra_weight_attrs.pop("weight_loader")
        quant_bias = torch.empty(rows, dtype=torch.int32)
        _add(layer, "quant_bias", quant_bias, output_dim=0, weight_loader=channel_loader)
        deq_scale = torch.empty(rows, dtype=torch.float32)
        deq_loader = _load_deq_scale(channel_loader)
        _add(layer, "deq_scale", deq_scale, output_dim=0, weight_loader=deq_loader)

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        if torch.isnan(layer.input_scale).any() or torch.isnan(layer.input_offset).any():
            raise ValueError(
                f"quantization 'ascend': W8A8 layer {self.prefix} got no input_scale or "
                "input_offset from the checkpoint"
            )
        # npu_quantize multiplies by the reciprocal scale, along the input's last axis
        # (vllm-ascend repeats both to the input width), in the activations' dtype.
        width, dtype = layer.weight.shape[1], layer.params_dtype
        scale = (1 / layer.input_scale).repeat(width).to(dtype)
        _replace(layer, "input_scale", scale)
        _replace(layer, "input_offset", layer.input_offset.repeat(width).to(dtype))
        if isinstance(layer, RowParallelLinear) and layer.tp_rank > 0:
            # The partial sums of the ranks are added up: quant_bias (full-width) once.
            layer.quant_bias.data.zero_()
        _replace(layer, "weight_scale", None)  # folded into deq_scale by the writer
        _replace(layer, "weight_offset", None)

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x_q = torch.empty(rows.shape, dtype=torch.int8, device=x.device)
        C.quantize_int8(x_q, rows, layer.input_scale, layer.input_offset)
        out = torch.empty(rows.shape[0], layer.weight.shape[0], dtype=x.dtype, device=x.device)
        C.int8_linear(out, x_q, layer.weight, layer.deq_scale, None, layer.quant_bias)
        return out.view(*x.shape[:-1], -1)


class AscendW8A8DynamicLinearMethod(_Int8Linear):
    """Dynamic W8A8: each token quantized symmetrically with its own scale ``s``, then
    ``y = (x_q @ W^T) * weight_scale * s + bias``."""

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        _replace(layer, "weight_scale", layer.weight_scale.reshape(-1).contiguous())
        _replace(layer, "weight_offset", None)  # zeros: the weights are symmetric

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x_q = torch.empty(rows.shape, dtype=torch.int8, device=x.device)
        scale = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
        C.dynamic_quant_int8(x_q, scale, rows)
        out = torch.empty(rows.shape[0], layer.weight.shape[0], dtype=x.dtype, device=x.device)
        C.int8_linear(out, x_q, layer.weight, layer.weight_scale, scale, bias)
        return out.view(*x.shape[:-1], -1)


LINEAR_METHODS: dict[str, type[_Int8Linear]] = {
    "W8A16": AscendW8A16LinearMethod,
    "W8A8": AscendW8A8LinearMethod,
    "W8A8_DYNAMIC": AscendW8A8DynamicLinearMethod,
}
