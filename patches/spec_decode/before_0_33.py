"""Releases before 0.33: the rejection-sampler kernels of 0.32, the runner's draft copy of 0.27+.

In 0.32 each rejection-sampler kernel sits in a warm-up dispatcher.

The dispatcher binds its inputs to the kernel's parameter names and launches
``kernel[grid](**kwargs)``; the torch stand-in takes the kernel's place with the
same names, so the dispatcher, its warm-up registration and vLLM's host code stay.
The kernels' parameters are those of 0.23 to 0.31.
"""

import inspect
from collections.abc import Callable
from typing import Any

import torch
from vllm_ascend_compat.patches.spec_decode import launch
from vllm_ascend_compat.patches.spec_decode.kernels import KernelLaunch


def _launch(fn: Callable[..., None]) -> KernelLaunch:
    params = inspect.signature(fn).parameters.values()
    names = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    return KernelLaunch(fn, names[1:])  # without the grid


def torch_greedy_sample(original: Any) -> KernelLaunch:
    return _launch(launch.greedy)


def torch_random_sample(original: Any) -> KernelLaunch:
    return _launch(launch.random)


def torch_expand(original: Any) -> KernelLaunch:
    return _launch(launch.expand)


def torch_recovered_tokens(original: Any) -> KernelLaunch:
    return _launch(launch.recovered)


def host_draft_copy(original: Any) -> Any:
    """The runner's copy of draft ids to the host (0.27+: a 2-D slice, and the draft width)."""

    def _copy_draft_token_ids_to_cpu(
        self: Any, scheduler_output: Any, zeros_only: bool = False
    ) -> None:
        if torch.is_tensor(self._draft_token_ids):
            self.prev_num_spec_tokens = self._draft_token_ids.shape[1]
        if self.use_async_scheduling and not (
            scheduler_output.has_structured_output_requests
            or self.input_batch.sampling_metadata.output_token_ids
        ):
            return
        self._draft_token_req_ids = self.input_batch.req_ids.copy()
        draft_token_ids = self._draft_token_ids
        if not torch.is_tensor(draft_token_ids):
            return
        num_reqs, num_spec_tokens = draft_token_ids.shape
        host = self.draft_token_ids_cpu[:num_reqs, :num_spec_tokens]
        if zeros_only:
            host.zero_()
        else:
            host.copy_(draft_token_ids)  # on the current stream: a completed copy
        self.draft_token_ids_event.record()

    return _copy_draft_token_ids_to_cpu
