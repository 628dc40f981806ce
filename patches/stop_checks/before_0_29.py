"""Length caps that ``min_tokens`` cannot skip, for 0.11.1 up to 0.29 (called per request per step).

While ``min_tokens`` is pending only the length caps are checked; once it is met
the release's own check runs unchanged (its stop tokens, caps and, where it has
them, repetition checks), so one implementation serves every release shape.
"""

from collections.abc import Callable
from typing import Any

from vllm.v1.request import RequestStatus


def length_caps_before_min_tokens(
    original: Callable[[Any, int], bool],
) -> Callable[[Any, int], bool]:
    def check_stop(request: Any, max_model_len: int) -> bool:
        if request.num_output_tokens < request.sampling_params.min_tokens:
            if (
                request.num_tokens >= max_model_len
                or request.num_output_tokens >= request.max_tokens
            ):
                request.status = RequestStatus.FINISHED_LENGTH_CAPPED
                return True
            return False
        return original(request, max_model_len)

    return check_stop
