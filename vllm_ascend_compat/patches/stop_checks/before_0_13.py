"""Length caps that ``min_tokens`` cannot skip, for 0.11.1 to 0.12 (their check also
finishes pooling requests, from the pooler output)."""

from collections.abc import Callable
from typing import Any

from vllm_ascend_compat.patches.stop_checks.before_0_17 import length_caps_before_min_tokens


def length_caps_before_min_tokens_pooling(original: Callable[..., bool]) -> Callable[..., bool]:
    generate = length_caps_before_min_tokens(original)

    def check_stop(request: Any, max_model_len: int, pooler_output: Any = None) -> bool:
        if request.pooling_params:
            return original(request, max_model_len, pooler_output)
        return generate(request, max_model_len)

    return check_stop
