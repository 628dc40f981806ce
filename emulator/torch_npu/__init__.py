"""torch_npu for the EMULATED npu device: an emulator of the device, for tests.

There is no Ascend NPU and no CANN here. Importing this package builds (once, cached) and
loads a small C++ extension that registers PyTorch's PrivateUse1 backend, renames it
``npu``, and registers :mod:`torch_npu.npu` as ``torch.npu``. Tensors on ``npu`` live in
host memory and every operator runs on the CPU kernels; streams and events are
synchronous. The emulator gives tests a device that is not the CPU, with its own dispatch
key, device indices and memory counts; it cannot know the real device's numerics or
timing, and nothing here ran on Ascend hardware.

Of torch_npu's own operators it has the ones the plugin calls (:mod:`torch_npu.ops`):
``npu::npu_rms_norm``, ``npu_add_rms_norm``, ``npu_swiglu``,
``npu_weight_quant_batchmatmul``, ``npu_quantize``, ``npu_dynamic_quant``,
``npu_quant_matmul``, ``npu_format_cast`` (with ``get_npu_format``),
``npu_fused_infer_attention_score`` and
``atb::_npu_rotary_embedding``, ``_npu_reshape_and_cache``, ``_npu_paged_attention``,
defined with the real schemas (``schemas.toml``) as reference torch math that enforces the
real ops' documented preconditions; exposed here as ``torch_npu.<name>``. Their numerics
are the emulator's, not the NPU's.

Collectives: :mod:`torch_npu.distributed` registers the ``hccl`` backend for ``npu``
(gloo over the same host memory).

Importable only when ``VLLM_ASCEND_COMPAT_EMULATED_NPU=1`` (see ``emulator/README.md``).
"""

from __future__ import annotations

import torch

from . import npu

EMULATED = True
__version__ = "0.0.0+emulated"

if torch._C._get_privateuse1_backend_name() != "npu":
    torch.utils.rename_privateuse1_backend("npu")
    torch._register_device_module("npu", npu)
    torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)

from . import distributed, ops  # noqa: E402  (ops: defines npu:: and atb::; needs the backend)

globals().update(ops.public_functions())
get_npu_format = ops.get_npu_format
distributed.register()


def _not_emulated(name: str):
    def refuse(*args, **kwargs):
        raise NotImplementedError(
            f"torch_npu.{name} is not emulated: neither the plugin nor vLLM calls it"
        )

    refuse.__name__ = name
    return refuse


# transformers imports these whenever torch_npu is importable (its NPU flash-attention
# integration), so they exist; calling one raises.
NOT_EMULATED = ("npu_fusion_attention", "npu_rotary_mul")
globals().update({name: _not_emulated(name) for name in NOT_EMULATED})

__all__ = ["EMULATED", "distributed", "get_npu_format", "npu", "ops", *ops.KERNELS, *NOT_EMULATED]
