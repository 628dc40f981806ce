"""The plugin's logger: a child of vLLM's, so its lines appear in vLLM's log format."""

import logging

logger = logging.getLogger("vllm.ascend_compat")
