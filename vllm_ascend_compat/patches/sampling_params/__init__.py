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
)
