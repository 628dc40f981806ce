"""Stop strings, checked by the V1 detokenizer on the text of each step's new tokens.

Three upstream fixes, each keyed to the releases that lack it:

- several stop strings match: cut at the one that completes earliest in the text,
  not the first in list order (0.27.0). Up to 0.10.x the V1 detokenizer calls the
  V0 ``StopChecker``; from 0.11.0 it has its own ``check_stop_strings``.
- one step appends several tokens (speculative decoding) and a stop string
  completes inside them: drop the tokens and logprobs after it, not only the text
  (0.32.0).
- stop strings must not end generation before ``min_tokens`` (0.10.1).
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

DETOKENIZER_UPDATE = "vllm.v1.engine.detokenizer:BaseIncrementalDetokenizer.update"

_EARLIEST_REASON = (
    "When several stop strings match the new text, the output is cut at the first one "
    "in the stop list instead of the one that completes first, so the text runs past "
    "a stop string that was generated earlier."
)
_EARLIEST_UPSTREAM = "https://github.com/vllm-project/vllm/pull/49391"

PATCHES = (
    Patch(
        id="earliest-stop-string-v0-checker",
        target="vllm.engine.output_processor.stop_checker:StopChecker.check_stop_strings",
        versions="<0.11.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_11:earliest_stop_string",
        reason=_EARLIEST_REASON + " (releases whose V1 detokenizer calls the V0 StopChecker)",
        upstream=_EARLIEST_UPSTREAM,
        remove_when="every supported line is 0.11.0 or newer",
        signature="(output_text, new_char_count, stop, include_in_output)",
    ),
    Patch(
        id="earliest-stop-string",
        target="vllm.v1.engine.detokenizer:check_stop_strings",
        versions=">=0.11.0,<0.27.0",
        fixed_by="best_stop_str",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_27:earliest_stop_string",
        reason=_EARLIEST_REASON,
        upstream=_EARLIEST_UPSTREAM,
        remove_when="every supported line is 0.27.0 or newer",
        signature="(output_text, new_char_count, stop, include_in_output)",
    ),
    Patch(
        id="stop-string-drops-later-tokens",
        target="vllm.v1.engine.detokenizer:BaseIncrementalDetokenizer.update",
        versions="<0.32.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_32:one_token_at_a_time",
        reason=(
            "When one step appends several tokens (speculative decoding) and a stop string "
            "completes inside them, the text is cut but token_ids keep the tokens after "
            "it. Check the step's tokens one at a time and drop those after the stop."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/v1/engine/detokenizer.py",
        remove_when="every supported line is 0.32.0 or newer",
        signature="(self, new_token_ids, stop_terminated)",
        fixed_by="bisect_left(token_offsets",
    ),
    Patch(
        id="stop-string-drops-later-logprobs",
        target="vllm.v1.engine.logprobs:LogprobsProcessor.update_from_output",
        versions=">=0.12.0,<0.32.0",  # one logprobs row per token from 0.12.0
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_32:logprobs_of_kept_tokens",
        reason=(
            "The logprobs of tokens dropped after a stop string (see "
            "stop-string-drops-later-tokens) are still reported and summed into "
            "cumulative_logprob. Keep only the rows of the tokens that are kept."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/v1/engine/output_processor.py",
        remove_when="every supported line is 0.32.0 or newer",
        signature="(self, output)",
        # the patch is for the per-token rows of 0.12.0's LogprobsLists: before 0.12 a
        # spec-decode step samples logprobs for its bonus token only (0.11.0's rejection
        # sampler computes none), so there are no rows of dropped tokens. The fix
        # (0.32.0) is in the detokenizer, which then cuts the tokens itself
        needs=("vllm.v1.outputs:LogprobsLists.slice_request", "def slice_request"),
        fixed_by=(DETOKENIZER_UPDATE, "bisect_left(token_offsets"),
    ),
    Patch(
        id="stop-strings-after-min-tokens",
        target="vllm.v1.engine.detokenizer:IncrementalDetokenizer.from_new_request",
        versions="<0.10.1",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,  # once per request; the per-step cost falls on min_tokens requests only
        impl=f"{__name__}.before_0_10_1:stop_strings_after_min_tokens",
        reason=(
            "A stop string generated within the first min_tokens tokens ends the request "
            "early. Hold the stop-string check back until min_tokens tokens exist."
        ),
        upstream="https://github.com/vllm-project/vllm/pull/22014",
        remove_when="every supported line is 0.10.1 or newer",
        signature="(cls, tokenizer, request)",
        fixed_by=(DETOKENIZER_UPDATE, "pull/22014"),  # the min_tokens offset, from 0.10.1
    ),
)
