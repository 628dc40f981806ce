"""Each unquantized linear weight, after loading, in the form the device multiplies fastest.

* NPU: cast to FRACTAL_NZ (``torch_npu.npu_format_cast``), as vllm-ascend does; the NPU's
  matmul takes it as it is, so vLLM's own apply stays. The LM head is left as it is.
* CPU mode: prepacked for oneDNN (``torch.ops.mkldnn._reorder_linear_weight``), and the
  layer's method becomes :class:`PrepackedLinearMethod`, whose apply is one call of
  torch's oneDNN linear: what vLLM's CPU backend does with an op of its own. The LM head
  gets a prepacked copy beside its weight, which token lookups still read when it is tied
  to the embedding (:class:`PrepackedLMHeadMethod`; vLLM's CPU backend keeps both too).
  float16 weights stay as they are (oneDNN has no fast float16 path on most x86 CPUs).

Once per layer at load; the hot path is the layer's ``quant_method.apply``, as in vLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from vllm.model_executor.layers.linear import UnquantizedLinearMethod
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    UnquantizedEmbeddingMethod,
)

from vllm_ascend_compat import activation

ACL_FORMAT_FRACTAL_NZ = 29

# oneDNN chooses the packed layout for a batch of this many rows; any batch size still
# multiplies. Decode steps dominate generation: packed for 16 rows, matmuls of 1 and 16
# rows ran 5-15% faster than packed with no hint (interleaved, on a loaded 2-core EPYC).
PACKED_FOR_ROWS = 16


def onednn_packed(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (``[out, in]``) prepacked for torch's oneDNN linear."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_FOR_ROWS)


class PrepackedLinearMethod(UnquantizedLinearMethod):
    """CPU mode: ``layer.weight`` is a oneDNN-prepacked tensor (``[out, in]``, opaque
    layout), multiplied by torch's oneDNN linear."""

    def __init__(self) -> None:
        pass  # vLLM's constructor (0.33) picks a GEMM for its own apply; this one needs none

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, bias, "none", [], "")


class PrepackedLMHeadMethod(UnquantizedEmbeddingMethod):
    """CPU mode: the logits from ``layer.packed_weight``, a oneDNN-prepacked copy of the
    LM head's weight."""

    def apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, layer.packed_weight, bias, "none", [], "")


PREPACKED = PrepackedLinearMethod()
PREPACKED_LM_HEAD = PrepackedLMHeadMethod()

Prepare = Callable[[torch.nn.Module], None]


def _nothing(layer: torch.nn.Module) -> None:
    pass


def _read_dense(layer: torch.nn.Module) -> bool:
    """A layer whose weight another one reads as a plain matrix, not only through ``apply``:
    MLA's ``kv_b_proj``, split into the absorbed projections (mla.py marks it)."""
    return getattr(layer, "weight_read_dense", False)


def _for_cpu() -> tuple[Prepare, Prepare]:
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    dtypes = (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)

    def prepack(layer: torch.nn.Module) -> None:
        weight = layer.weight
        if weight.dtype in dtypes and weight.dim() == 2 and not _read_dense(layer):
            layer.weight = torch.nn.Parameter(onednn_packed(weight), requires_grad=False)
            layer.quant_method = PREPACKED

    def prepack_lm_head(layer: torch.nn.Module) -> None:
        if isinstance(layer, ParallelLMHead) and layer.weight.dtype in dtypes:
            layer.packed_weight = onednn_packed(layer.weight)
            layer.quant_method = PREPACKED_LM_HEAD

    return prepack, prepack_lm_head


def _for_npu() -> tuple[Prepare, Prepare]:
    torch_npu = importlib.import_module("torch_npu")

    def cast_to_nz(layer: torch.nn.Module) -> None:
        weight = layer.weight
        half = weight.dtype in (torch.float16, torch.bfloat16)
        if weight.dim() == 2 and half and not _read_dense(layer):
            weight.data = torch_npu.npu_format_cast(weight.data, ACL_FORMAT_FRACTAL_NZ)

    return cast_to_nz, _nothing


PREPARE_LINEAR, PREPARE_LM_HEAD = _for_npu() if activation.decide().device == "npu" else _for_cpu()


def linear_after_vllms_own(original: Callable[..., None]) -> Callable[..., None]:
    """vLLM's own preparation of a linear weight (none on this platform; the base class's
    no-op before 0.9.2), then the device's."""

    def process_weights_after_loading(self: Any, layer: torch.nn.Module) -> None:
        original(self, layer)
        PREPARE_LINEAR(layer)

    return process_weights_after_loading


def embedding_after_vllms_own(original: Callable[..., None]) -> Callable[..., None]:
    """vLLM's own preparation of an embedding (none on this platform; the base class's
    no-op before 0.10.2), then the device's for an LM head."""

    def process_weights_after_loading(self: Any, layer: torch.nn.Module) -> None:
        original(self, layer)
        PREPARE_LM_HEAD(layer)

    return process_weights_after_loading
