"""Request validation in ``vllm.sampling_params``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="reject-non-finite-sampling",
        target="vllm.sampling_params:SamplingParams._verify_args",
        versions="<0.24.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_24:reject_non_finite",
        reason=(
            "NaN or inf temperature or repetition_penalty passes validation and then "
            "samples token 0 forever; reject it with ValueError (a 400 over HTTP). "
            "The temperature <= 2 limit of the same upstream change is not backported."
        ),
        upstream="https://github.com/vllm-project/vllm/pull/45116",
        remove_when="every supported line is 0.24.0 or newer",
        signature="(self)",
        fixed_by="math.isfinite(self.temperature)",
    ),
    Patch(
        id="structured-output-errors-are-client-errors",
        target="vllm.sampling_params:SamplingParams._validate_structured_outputs",
        versions=">=0.27.0,<0.28.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_28:structured_output_errors_are_client_errors",
        reason=(
            "The structured-output validators raise a plain ValueError, which AsyncLLM."
            "generate no longer passes through from 0.27 on: an invalid JSON schema, regex "
            "or grammar is answered with a 500 and an empty message. Raise it as "
            "VLLMValidationError, a 400 naming the problem."
        ),
        upstream="https://github.com/vllm-project/vllm/pull/52394",
        remove_when="every supported line is 0.28.0 or newer",
        signature="(self, model_config, structured_outputs_config, tokenizer)",
        needs=("vllm.v1.engine.async_llm:AsyncLLM.generate", "except VLLMClientError"),
        fixed_by="except VLLMValidationError:",
    ),
)
