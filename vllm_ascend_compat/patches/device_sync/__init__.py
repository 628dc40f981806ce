"""CUDA synchronisation that vLLM's GPU model runner calls directly, before it had a hook."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="prompt-logprobs-sync-on-device",
        target="vllm.v1.worker.gpu_model_runner:GPUModelRunner._get_prompt_logprobs_dict",
        versions="<0.9.1",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_9_1:sync_on_device",
        reason=(
            "vLLM 0.9.0 waits for the prompt logprobs' device-to-host copies with "
            "torch.cuda.synchronize(), which fails on an NPU and in CPU mode; from 0.9.1 it "
            "calls the runner's _sync_device(), which the plugin's runner implements. The "
            "wait goes to _sync_device() here too."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.9.1/vllm/v1/worker/gpu_model_runner.py",
        remove_when="the window starts at 0.9.1 or later",
        signature="(self, hidden_states, scheduler_output)",
        needs="torch.cuda.synchronize()",
    ),
)
