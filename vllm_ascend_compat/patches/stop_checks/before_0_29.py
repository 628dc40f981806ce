"""Length caps that ``min_tokens`` cannot skip, for 0.17 up to 0.29 (per request per step).

The release's own check with one change: a pending ``min_tokens`` holds back the
stop tokens and the repetition check, no longer the length caps.
"""

from collections.abc import Callable
from typing import Any

from vllm.v1.core.sched.utils import check_sequence_repetition
from vllm.v1.request import RequestStatus


def length_caps_before_min_tokens(original: Callable[..., bool]) -> Callable[..., bool]:
    def check_stop(request: Any, max_model_len: int) -> bool:
        sampling_params = request.sampling_params
        min_tokens_met = request.num_output_tokens >= sampling_params.min_tokens
        if min_tokens_met:
            last_token_id = request.output_token_ids[-1]
            if last_token_id == sampling_params.eos_token_id:
                request.status = RequestStatus.FINISHED_STOPPED
                return True
            if last_token_id in (sampling_params.stop_token_ids or ()):
                request.status = RequestStatus.FINISHED_STOPPED
                request.stop_reason = last_token_id
                return True
        if request.num_tokens >= max_model_len or request.num_output_tokens >= request.max_tokens:
            request.status = RequestStatus.FINISHED_LENGTH_CAPPED
            return True
        if not min_tokens_met:
            return False
        repetition_detection = sampling_params.repetition_detection
        if repetition_detection is not None and check_sequence_repetition(
            request.output_token_ids, repetition_detection
        ):
            request.status = RequestStatus.FINISHED_REPETITION
            request.stop_reason = "repetition_detected"
            return True
        return False

    return check_stop
