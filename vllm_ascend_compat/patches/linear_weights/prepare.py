"""Each unquantized linear weight, after loading, in the form the device multiplies fastest.

* NPU: cast to FRACTAL_NZ (``torch_npu.npu_format_cast``), as vllm-ascend does; the NPU's
  matmul takes it as it is, so vLLM's own apply stays.
* CPU mode: prepacked for oneDNN (``torch.ops.mkldnn._reorder_linear_weight``), and the
  layer's method becomes :class:`PrepackedLinearMethod`, whose apply is one call of
  torch's oneDNN linear: what vLLM's CPU backend does with an op of its own. float16
  weights stay as they are (oneDNN has no fast float16 path on most x86 CPUs).

Once per layer at load; the hot path is the layer's ``quant_method.apply``, as in vLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from vllm.model_executor.layers.linear import UnquantizedLinearMethod

from vllm_ascend_compat import activation

ACL_FORMAT_FRACTAL_NZ = 29


class PrepackedLinearMethod(UnquantizedLinearMethod):
    """CPU mode: ``layer.weight`` is a oneDNN-prepacked tensor (``[out, in]``, opaque
    layout), multiplied by torch's oneDNN linear."""

    def __init__(self) -> None:
        pass  # vLLM's constructor (0.33) picks a GEMM for its own apply; this one needs none

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, bias, "none", [], "")


PREPACKED = PrepackedLinearMethod()


def _packed_dtypes() -> tuple[torch.dtype, ...]:
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (torch.float32, torch.bfloat16)
    return (torch.float32,)


def _for_cpu() -> Callable[[torch.nn.Module], None]:
    dtypes = _packed_dtypes()

    def prepack(layer: torch.nn.Module) -> None:
        weight = layer.weight
        if weight.dtype not in dtypes or weight.dim() != 2:
            return
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        layer.weight = torch.nn.Parameter(packed, requires_grad=False)
        layer.quant_method = PREPACKED

    return prepack


def _for_npu() -> Callable[[torch.nn.Module], None]:
    torch_npu = importlib.import_module("torch_npu")

    def cast_to_nz(layer: torch.nn.Module) -> None:
        weight = layer.weight
        if weight.dim() == 2 and weight.dtype in (torch.float16, torch.bfloat16):
            weight.data = torch_npu.npu_format_cast(weight.data, ACL_FORMAT_FRACTAL_NZ)

    return cast_to_nz


def _for_this_device() -> Callable[[torch.nn.Module], None]:
    return _for_npu() if activation.decide().device == "npu" else _for_cpu()


def after_vllms_own(original: Callable[..., None]) -> Callable[..., None]:
    """vLLM's own preparation (none on this platform; a no-op before 0.9.2), then the
    device's."""

    def process_weights_after_loading(self: Any, layer: torch.nn.Module) -> None:
        original(self, layer)
        PREPARE(layer)

    return process_weights_after_loading


PREPARE = _for_this_device()
