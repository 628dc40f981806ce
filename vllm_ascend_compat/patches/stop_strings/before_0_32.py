"""Drop the tokens and logprobs after a stop string (0.32.0) for releases before 0.32.

Upstream records the text offset of each new token and cuts ``token_ids`` after
the one that completes the stop string. Here the release's own ``update`` is fed
one token at a time instead, which gives the same cut on every release's update
shape; single-token steps and requests without stop strings go straight through.
"""

from collections.abc import Callable
from typing import Any


def one_token_at_a_time(original: Callable[..., str | None]) -> Callable[..., str | None]:
    def update(self: Any, new_token_ids: list[int], stop_terminated: bool) -> str | None:
        if len(new_token_ids) < 2 or not self.stop:
            return original(self, new_token_ids, stop_terminated)
        last = len(new_token_ids) - 1
        for i, token_id in enumerate(new_token_ids):
            stop_string = original(self, [token_id], stop_terminated and i == last)
            if stop_string is not None:
                # The caller's list is the step's EngineCoreOutput.new_token_ids:
                # cut it too, as upstream does, so delta outputs and logprobs agree.
                del new_token_ids[i + 1 :]
                return stop_string
        return None

    return update


def logprobs_of_kept_tokens(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def update_from_output(self: Any, output: Any) -> None:
        logprobs = output.new_logprobs
        if logprobs is not None and len(logprobs.sampled_token_ranks) > len(output.new_token_ids):
            output.new_logprobs = logprobs.slice_request(0, len(output.new_token_ids))
        original(self, output)

    return update_from_output
