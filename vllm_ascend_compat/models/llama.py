"""A Llama under the plugin's own architecture name: vLLM's implementation, served through
the out-of-tree registry path that NPU-specific model variants take."""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.llama import LlamaForCausalLM

from vllm_ascend_compat.log import logger


class AscendCompatLlamaForCausalLM(LlamaForCausalLM):
    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        logger.info("vllm-ascend-compat: built out-of-tree model %s", type(self).__name__)
