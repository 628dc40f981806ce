"""The runner's copy of draft ids to the host from 0.24 (a 2-D slice, and the draft width),
on the current stream instead of a CUDA side stream."""

from typing import Any

import torch


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
