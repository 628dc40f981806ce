"""The V1 runner's persistent batch, ``vllm.v1.worker.gpu_input_batch``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="prompt-logprobs-once-per-request",
        target="vllm.v1.worker.gpu_input_batch:InputBatch.add_request",
        versions="<0.12.0",
        phase=Phase.WORKER,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_12:prompt_logprobs_once",
        reason=(
            "The batch registers a request's prompt logprobs whenever the request joins it, "
            "and a running request rejoins after every step it was not scheduled in "
            "(pipeline parallel, preemption). The runner then sends the prompt logprobs "
            "again: an uninitialised tensor past the prompt, which crashes detokenization "
            "(OverflowError), or a second full copy after preemption. Register them only "
            "until the first token is sampled, which is when they are sent."
        ),
        upstream="https://github.com/vllm-project/vllm/pull/29071",
        remove_when="every supported line is 0.12.0 or newer",
        signature="(self, request)",
    ),
)
