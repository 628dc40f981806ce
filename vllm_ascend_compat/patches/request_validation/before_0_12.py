"""The same check for the V1 ``Processor``, before its 0.12 rename to ``InputProcessor``."""

from vllm_ascend_compat.patches.request_validation.before_0_17 import reject_oov_stop_token_ids

__all__ = ["reject_oov_stop_token_ids"]
