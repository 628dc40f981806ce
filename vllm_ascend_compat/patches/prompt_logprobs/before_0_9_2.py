"""Backport of vLLM PR 29071 for 0.9.0 and 0.9.1, whose ``add_request`` takes the row."""

from collections.abc import Callable
from typing import Any


def prompt_logprobs_once_indexed(original: Callable[..., None]) -> Callable[..., None]:
    def add_request(self: Any, request: Any, req_index: int | None = None) -> None:
        """vLLM's add_request, forgetting the prompt logprobs of a request that has sampled
        (see before_0_12)."""
        original(self, request, req_index)
        if request.output_token_ids:
            self.num_prompt_logprobs.pop(request.req_id, None)

    return add_request
