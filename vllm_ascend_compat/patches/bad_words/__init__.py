"""``bad_words`` entries that cannot become a token sequence.

``SamplingParams.update_from_tokenizer`` indexes the first token of each entry; an
entry that tokenizes to nothing raises IndexError in the API server (HTTP 500).
Upstream fixed it in two steps: 0.22.0 rejects empty strings when the params are
built, 0.29.0 rejects any entry that tokenizes to nothing (e.g. only spaces).
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="reject-empty-bad-words",
        target="vllm.sampling_params:SamplingParams._verify_args",
        versions="<0.22.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_22:reject_empty_bad_words",
        reason=(
            "An empty string in bad_words passes validation, then update_from_tokenizer "
            "raises IndexError on its empty token list: HTTP 500 instead of 400. Reject it "
            "with ValueError when the params are built, as 0.22.0 does."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.22.0/vllm/sampling_params.py",
        remove_when="every supported line is 0.22.0 or newer",
        signature="(self)",
        fixed_by="bad_words cannot contain an empty string",
    ),
    Patch(
        id="reject-bad-words-without-tokens",
        target="vllm.sampling_params:SamplingParams.update_from_tokenizer",
        versions="<0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_29:reject_bad_words_without_tokens",
        reason=(
            "A bad_words entry that tokenizes to nothing (only spaces, or text the "
            "tokenizer drops) raises IndexError in update_from_tokenizer: HTTP 500 instead "
            "of 400. Reject it with the release's validation error, as 0.29.0 does."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.29.0/vllm/sampling_params.py",
        remove_when="every supported line is 0.29.0 or newer",
        signature="(self, tokenizer)",
        fixed_by="bad_words entries must tokenize to at least one token",
    ),
)
