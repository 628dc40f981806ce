"""The V1 scheduler's per-step stop check, ``vllm.v1.core.sched.utils.check_stop``.

The scheduler module imports ``check_stop`` by name; the registry rebinds that alias.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

_MIN_TOKENS_REASON = (
    "check_stop returns early while min_tokens is pending, before the length caps: a "
    "request that reaches max_model_len first is never finished and the engine spins "
    "on it forever. Apply the length caps while min_tokens is pending; stop tokens "
    "still wait for min_tokens."
)
TARGET = "vllm.v1.core.sched.utils:check_stop"
# The length cap checked first, before the stop tokens (0.11.1 reordered it).
LENGTH_FIRST = "-> bool:\n    if (request.num_tokens >= max_model_len"
MIN_TOKENS_RETURN = "if request.num_output_tokens < sampling_params.min_tokens:"
MIN_TOKENS_FIX = "Order of checks is important for min_tokens"  # 0.29.0's comment on the fix
_MIN_TOKENS_UPSTREAM = (
    "https://github.com/vllm-project/vllm/blob/v0.29.0/vllm/v1/core/sched/utils.py"
)

STOP_TOKEN_REASON = (
    "A stop token or EOS sampled exactly at max_tokens reports finish_reason "
    "'length' instead of 'stop' with its stop_reason. Check stop tokens before "
    "the length caps, keeping the caps unconditional (0.11.1's own order put a "
    "min_tokens early return before them, which hangs at max_model_len)."
)
STOP_TOKEN_UPSTREAM = (
    "https://github.com/vllm-project/vllm/blob/v0.11.1/vllm/v1/core/sched/utils.py"
)

PATCHES = (
    Patch(
        id="stop-token-before-length-cap-no-pooling",
        target=TARGET,
        versions="<0.9.2",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_9_2:stop_token_before_length_cap_no_pooling",
        reason=STOP_TOKEN_REASON + " (0.9.0 and 0.9.1: no pooling requests in V1.)",
        upstream=STOP_TOKEN_UPSTREAM,
        remove_when="the window starts at 0.9.2 or later",
        signature="(request, max_model_len)",
        needs=LENGTH_FIRST,
    ),
    Patch(
        id="stop-token-before-length-cap",
        target=TARGET,
        versions=">=0.9.2,<0.11.1",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_11_1:stop_token_before_length_cap",
        reason=STOP_TOKEN_REASON,
        upstream=STOP_TOKEN_UPSTREAM,
        remove_when="the window starts at 0.11.1 or later",
        signature="(request, max_model_len, pooler_output)",
        needs=LENGTH_FIRST,
    ),
    Patch(
        id="min-tokens-keeps-length-caps-pooling",
        target=TARGET,
        versions=">=0.11.1,<0.13.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_13:length_caps_before_min_tokens_pooling",
        reason=_MIN_TOKENS_REASON + " (0.11.1 to 0.12: the check also takes the pooler output.)",
        upstream=_MIN_TOKENS_UPSTREAM,
        remove_when="the window starts at 0.13.0 or later",
        signature="(request, max_model_len, pooler_output)",
        needs=MIN_TOKENS_RETURN,
        fixed_by=MIN_TOKENS_FIX,
    ),
    Patch(
        id="min-tokens-keeps-length-caps-request-eos",
        target=TARGET,
        versions=">=0.13.0,<0.17.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_17:length_caps_before_min_tokens",
        reason=_MIN_TOKENS_REASON,
        upstream=_MIN_TOKENS_UPSTREAM,
        remove_when="the window starts at 0.17.0 or later (then min-tokens-keeps-length-caps)",
        signature="(request, max_model_len)",
        needs=MIN_TOKENS_RETURN,
        fixed_by=MIN_TOKENS_FIX,
    ),
    Patch(
        id="min-tokens-keeps-length-caps",
        target=TARGET,
        versions=">=0.17.0,<0.29.0",  # the EOS lives in the sampling params from 0.17
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_29:length_caps_before_min_tokens",
        reason=_MIN_TOKENS_REASON,
        upstream=_MIN_TOKENS_UPSTREAM,
        remove_when="the window starts at 0.29.0 or later",
        signature="(request, max_model_len)",
        needs=MIN_TOKENS_RETURN,
        fixed_by=MIN_TOKENS_FIX,
    ),
)
