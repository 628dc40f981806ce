"""Stop strings wait for ``min_tokens`` (vLLM PR 22014, 0.10.1) for releases before 0.10.1.

Requests with both ``min_tokens`` and stop strings get a per-request ``update``
that detokenizes the first ``min_tokens`` tokens with the stop strings set aside,
then hands the rest of the step to the class's ``update`` and removes itself.
Other requests keep the class's ``update`` untouched.
"""

from typing import Any


def _request(tokenizer: Any = None, request: Any = None) -> Any:
    return request


def stop_strings_after_min_tokens(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    detokenizer = wrapped(*args, **kwargs)
    min_tokens = _request(*args, **kwargs).sampling_params.min_tokens
    if min_tokens and getattr(detokenizer, "stop", None):
        detokenizer.update = _held_until(detokenizer, min_tokens)
    return detokenizer


def _held_until(detokenizer: Any, min_tokens: int) -> Any:
    def update(new_token_ids: list[int], stop_terminated: bool) -> str | None:
        class_update = type(detokenizer).update
        held = min_tokens - len(detokenizer.output_token_ids)
        if held <= 0:
            del detokenizer.update  # min_tokens reached: back to the class's update
            return class_update(detokenizer, new_token_ids, stop_terminated)
        head, tail = new_token_ids[:held], new_token_ids[held:]
        stop, detokenizer.stop = detokenizer.stop, []
        try:
            class_update(detokenizer, head, stop_terminated and not tail)
        finally:
            detokenizer.stop = stop
        if not tail:
            return None
        stop_string = class_update(detokenizer, tail, stop_terminated)
        del new_token_ids[held + len(tail) :]  # tokens the class's update dropped
        return stop_string

    return update
