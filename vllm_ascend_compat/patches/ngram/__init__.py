"""The V1 ngram speculative proposer, ``vllm.v1.spec_decode.ngram_proposer``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="ngram-drafts-in-request-rows",
        target="vllm.v1.spec_decode.ngram_proposer:batch_propose_numba",
        versions=">=0.11.0,<0.12.0",
        needs="valid_ngram_num_drafts[i] =",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_12:drafts_in_request_rows",
        reason=(
            "The batched ngram kernel writes each draft to the row of its position among "
            "the valid requests instead of the request's own row, so when a request in the "
            "middle of the batch is skipped the later requests get no draft or another "
            "request's draft. Write to the request's row. (0.9.2 proposes per request and "
            "has no batched kernel.)"
        ),
        upstream="https://github.com/vllm-project/vllm/pull/29779",
        remove_when="every supported line is 0.12.0 or newer",
        signature=(
            "(valid_ngram_requests, num_tokens_no_spec, token_ids_cpu, min_n, max_n, "
            "max_model_len, k, valid_ngram_draft, valid_ngram_num_drafts)"
        ),
    ),
)
