"""The V1 scheduler's per-step stop check, ``vllm.v1.core.sched.utils.check_stop``.

The scheduler module imports ``check_stop`` by name; the registry rebinds that alias.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

_MIN_TOKENS_REASON = (
    "check_stop returns early while min_tokens is pending, before the length caps: a "
    "request that reaches max_model_len first is never finished and the engine spins "
    "on it forever. Apply the length caps while min_tokens is pending; stop tokens "
    "still wait for min_tokens. (0.11.1 has the bug with another signature; it is "
    "not a supported line.)"
)
_MIN_TOKENS_UPSTREAM = (
    "https://github.com/vllm-project/vllm/blob/v0.29.0/vllm/v1/core/sched/utils.py"
)

PATCHES = (
    Patch(
        id="stop-token-before-length-cap",
        target="vllm.v1.core.sched.utils:check_stop",
        versions="<0.11.1",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_11_1:stop_token_before_length_cap",
        reason=(
            "A stop token or EOS sampled exactly at max_tokens reports finish_reason "
            "'length' instead of 'stop' with its stop_reason. Check stop tokens before "
            "the length caps, keeping the caps unconditional (0.11.1's own order put a "
            "min_tokens early return before them, which hangs at max_model_len)."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.11.1/vllm/v1/core/sched/utils.py",
        remove_when="every supported line is 0.11.1 or newer",
        signature="(request, max_model_len, pooler_output)",
    ),
    Patch(
        id="min-tokens-keeps-length-caps-request-eos",
        target="vllm.v1.core.sched.utils:check_stop",
        versions=">=0.12.0,<0.17.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_17:length_caps_before_min_tokens",
        reason=_MIN_TOKENS_REASON,
        upstream=_MIN_TOKENS_UPSTREAM,
        remove_when="every supported line is 0.17.0 or newer (then min-tokens-keeps-length-caps)",
        signature="(request, max_model_len)",
    ),
    Patch(
        id="min-tokens-keeps-length-caps",
        target="vllm.v1.core.sched.utils:check_stop",
        versions=">=0.17.0,<0.29.0",  # the EOS lives in the sampling params from 0.17
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_29:length_caps_before_min_tokens",
        reason=_MIN_TOKENS_REASON,
        upstream=_MIN_TOKENS_UPSTREAM,
        remove_when="every supported line is 0.29.0 or newer",
        signature="(request, max_model_len)",
    ),
)
