"""Out-of-vocabulary ``stop_token_ids``, checked where each release validates a request.

The hook moves between lines: the V1 ``Processor`` (up to 0.12), its rename
``InputProcessor`` (0.13), then ``SamplingParams.verify`` (from 0.14 on; 0.18 on the
supported lines), which is where upstream put the check in 0.29.0.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

REASON = (
    "A stop_token_id outside the vocabulary passes validation; with min_tokens the "
    "min-tokens logits processor indexes the logits with it and the IndexError kills the "
    "engine core, failing every request in flight. Reject it as a bad request (400)."
)
UPSTREAM = "https://github.com/vllm-project/vllm/pull/54196"
REMOVE_WHEN = "every supported line is 0.29.0 or newer"

PATCHES = (
    Patch(
        id="reject-oov-stop-token-ids-processor",
        target="vllm.v1.engine.processor:Processor._validate_supported_sampling_params",
        versions="<0.12.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_12:reject_oov_stop_token_ids",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN,
        signature="(self, params)",
    ),
    Patch(
        id="reject-oov-stop-token-ids-input-processor",
        target="vllm.v1.engine.input_processor:InputProcessor._validate_supported_sampling_params",
        versions=">=0.12.0,<0.17.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_17:reject_oov_stop_token_ids",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN,
        signature="(self, params)",
    ),
    Patch(
        id="reject-oov-stop-token-ids",
        target="vllm.sampling_params:SamplingParams.verify",
        versions=">=0.17.0,<0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_29:reject_oov_stop_token_ids",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN,
        signature="(self, model_config, speculative_config, structured_outputs_config, tokenizer)",
        fixed_by="self._validate_stop_token_ids(",
    ),
)
