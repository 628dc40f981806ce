"""The plugin's MLA prefill backend for vLLM's MLA layer, before the platform hook (0.32)."""

from collections.abc import Callable
from typing import Any

from vllm_ascend_compat.mla_prefill import AscendMLAPrefillBackend


def the_plugins_prefill_backend(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_mla_prefill_backend(vllm_config: Any) -> type[AscendMLAPrefillBackend]:
        """Once per MLA layer, at model construction."""
        return AscendMLAPrefillBackend

    return get_mla_prefill_backend
