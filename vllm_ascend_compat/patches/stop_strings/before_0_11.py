"""The same fix on the V0 ``StopChecker``, which the V1 detokenizer calls before 0.11."""

from vllm_ascend_compat.patches.stop_strings.before_0_27 import earliest_stop_string

__all__ = ["earliest_stop_string"]
