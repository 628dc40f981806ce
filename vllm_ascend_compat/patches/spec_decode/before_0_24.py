"""The runner's copy of draft ids to the host for 0.14 to 0.23, without CUDA streams."""

from typing import Any

import torch


def host_draft_copy(original: Any) -> Any:
    def _copy_draft_token_ids_to_cpu(
        self: Any, scheduler_output: Any, zeros_only: bool = False
    ) -> None:
        if self.use_async_scheduling and not (
            scheduler_output.has_structured_output_requests
            or self.input_batch.sampling_metadata.output_token_ids
        ):
            return
        self._draft_token_req_ids = self.input_batch.req_ids.copy()
        draft_token_ids = self._draft_token_ids
        if not torch.is_tensor(draft_token_ids):
            return
        host = self.draft_token_ids_cpu[: draft_token_ids.shape[0]]
        if zeros_only:
            host.zero_()
        else:
            host.copy_(draft_token_ids)  # on the current stream: a completed copy
        self.draft_token_ids_event.record()

    return _copy_draft_token_ids_to_cpu
