"""Backport of vLLM PR 52394 (0.28.0) for 0.27: a bad structured-output spec is a 400."""

from typing import Any

from vllm.exceptions import VLLMValidationError


def structured_output_errors_are_client_errors(
    wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    # VLLMValidationError is no ValueError on 0.27, so vLLM's own errors pass through
    try:
        return wrapped(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise VLLMValidationError(str(e), parameter="structured_outputs") from e
