"""Backport of vLLM PR 29071 (0.12.0): a request's prompt logprobs are sent once."""

from collections.abc import Callable
from typing import Any


def prompt_logprobs_once(original: Callable[..., int]) -> Callable[..., int]:
    def add_request(self: Any, request: Any) -> int:
        """vLLM's add_request, forgetting the prompt logprobs of a request that has sampled.

        They go out with the first sampled token (a partial prefill samples nothing), so a
        rejoining request with output tokens has had them, and one without has not."""
        index = original(self, request)
        if request.output_token_ids:
            self.num_prompt_logprobs.pop(request.req_id, None)
        return index

    return add_request
