"""The MLA prefill backend vLLM's MLA layer builds beside the impl (0.21+), never called.

From 0.21 ``MLAAttention.__init__`` picks and constructs a prefill backend whatever the
attention backend is; on this platform its choice is FlashAttention's (0.21-0.31: no
device capability), whose module does not import without vLLM's CUDA kernels.
``AscendMLAImpl.forward_mha`` attends prefills itself, so the layer gets this class:
the patch ``mla-prefill-backend`` names it before 0.32, the platform's
``get_mla_prefill_backend_cls`` from 0.32.
"""

from __future__ import annotations

from typing import Any, NoReturn

try:  # 0.21+
    from vllm.v1.attention.backends.mla.prefill.base import MLAPrefillBackend
except ImportError:  # earlier releases build no MLA prefill backend, and never import this
    MLAPrefillBackend = object


class AscendMLAPrefillBackend(MLAPrefillBackend):
    @staticmethod
    def get_name() -> str:
        return "ASCEND_MLA"

    def run_prefill_new_tokens(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _not_called()

    def run_prefill_context_chunk(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _not_called()


def _not_called() -> RuntimeError:
    return RuntimeError(
        "vllm-ascend-compat: AscendMLAImpl.forward_mha attends MLA prefills itself; vLLM's "
        "prefill backend is not called on this platform"
    )
