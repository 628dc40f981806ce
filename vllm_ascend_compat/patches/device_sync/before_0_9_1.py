"""The runner's prompt-logprobs step of 0.9.0, waiting through ``_sync_device()``."""

from collections.abc import Callable
from typing import Any

import torch


def sync_on_device(original: Callable[..., dict]) -> Callable[..., dict]:
    def _get_prompt_logprobs_dict(self: Any, hidden_states: Any, scheduler_output: Any) -> dict:
        """Once per step; only a step with prompt logprobs reaches the synchronisation."""
        if not self.input_batch.num_prompt_logprobs:
            return original(self, hidden_states, scheduler_output)
        cuda_synchronize = torch.cuda.synchronize
        torch.cuda.synchronize = self._sync_device
        try:
            return original(self, hidden_states, scheduler_output)
        finally:
            torch.cuda.synchronize = cuda_synchronize

    return _get_prompt_logprobs_dict
