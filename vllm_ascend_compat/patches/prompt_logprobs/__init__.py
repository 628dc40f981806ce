"""The V1 runner's persistent batch, ``vllm.v1.worker.gpu_input_batch``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

REASON = (
    "The batch registers a request's prompt logprobs whenever the request joins it, "
    "and a running request rejoins after every step it was not scheduled in "
    "(pipeline parallel, preemption). The runner then sends the prompt logprobs "
    "again: an uninitialised tensor past the prompt, which crashes detokenization "
    "(OverflowError), or a second full copy after preemption. Register them only "
    "until the first token is sampled, which is when they are sent."
)
TARGET = "vllm.v1.worker.gpu_input_batch:InputBatch.add_request"
NEEDS = "self.num_prompt_logprobs["  # the registration that 0.12.0 moved out

PATCHES = (
    Patch(
        id="prompt-logprobs-once-per-request-indexed",
        target=TARGET,
        versions="<0.9.2",
        phase=Phase.WORKER,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_9_2:prompt_logprobs_once_indexed",
        reason=REASON + " (0.9.0 and 0.9.1: add_request also takes the row.)",
        upstream="https://github.com/vllm-project/vllm/pull/29071",
        remove_when="the window starts at 0.9.2 or later",
        signature="(self, request, req_index)",
        needs=NEEDS,
    ),
    Patch(
        id="prompt-logprobs-once-per-request",
        target=TARGET,
        versions=">=0.9.2,<0.12.0",
        phase=Phase.WORKER,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_12:prompt_logprobs_once",
        reason=REASON,
        upstream="https://github.com/vllm-project/vllm/pull/29071",
        remove_when="every supported line is 0.12.0 or newer",
        signature="(self, request)",
        needs=NEEDS,
    ),
)
