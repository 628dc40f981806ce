"""Recovered-token sampling in torch for releases before 0.17.

Up to 0.16 the host function sizes the kernel's block with ``triton.next_power_of_2``,
which vLLM's Triton placeholder lacks, so the whole function is replaced; its random
draws (one exponential per request and vocabulary entry, seeded requests from their
own generator) are made exactly as vLLM makes them.
"""

from typing import Any

import torch

from vllm_ascend_compat.patches.spec_decode import kernels


def torch_sample_recovered_tokens(original: Any) -> Any:
    def sample_recovered_tokens(
        max_spec_len: int,
        num_draft_tokens: list[int],
        cu_num_draft_tokens: torch.Tensor,
        draft_token_ids: torch.Tensor,
        draft_probs: torch.Tensor | None,
        target_probs: torch.Tensor,
        sampling_metadata: Any,
        device: torch.device,
    ) -> torch.Tensor:
        batch_size = len(num_draft_tokens)
        q = torch.empty((batch_size, target_probs.shape[-1]), dtype=torch.float32, device=device)
        q.exponential_()
        for i, generator in sampling_metadata.generators.items():
            if num_draft_tokens[i] > 0:  # as vLLM: no draws for requests without drafts
                q[i].exponential_(generator=generator)
        recovered_token_ids = torch.empty_like(draft_token_ids)
        kernels.sample_recovered_tokens(
            batch_size, recovered_token_ids, cu_num_draft_tokens, draft_token_ids,
            draft_probs, target_probs, q, inverted=False,
        )  # fmt: skip
        return recovered_token_ids

    return sample_recovered_tokens
