"""Stop-check order for 0.9.0 and 0.9.1, which have no pooling requests in V1."""

from collections.abc import Callable
from typing import Any

from vllm.v1.request import RequestStatus


def stop_token_before_length_cap_no_pooling(
    original: Callable[..., bool],
) -> Callable[..., bool]:
    def check_stop(request: Any, max_model_len: int) -> bool:
        sampling_params = request.sampling_params
        last_token_id = request.output_token_ids[-1]
        if not sampling_params.ignore_eos and last_token_id == request.eos_token_id:
            request.status = RequestStatus.FINISHED_STOPPED
            return True
        if last_token_id in (sampling_params.stop_token_ids or ()):
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = last_token_id
            return True
        if request.num_tokens >= max_model_len or request.num_output_tokens >= request.max_tokens:
            request.status = RequestStatus.FINISHED_LENGTH_CAPPED
            return True
        return False

    return check_stop
