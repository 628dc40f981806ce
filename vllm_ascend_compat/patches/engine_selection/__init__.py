"""Which engine vLLM picks, ``EngineArgs._is_v1_supported_oracle`` (the front end)."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="v1-engine-on-this-platform",
        target="vllm.engine.arg_utils:EngineArgs._is_v1_supported_oracle",
        versions="<0.9.2",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_9_2:v1_on_this_platform",
        reason=(
            "vLLM 0.9.0 and 0.9.1 send hardware other than CUDA and TPU to the V0 engine "
            "unless VLLM_USE_V1 is set, and a float32 model too, because V1 served only "
            "FlashAttention (fp16/bf16) then. The plugin runs V1 only, and its attention "
            "backend takes float32, so every model would be refused. As in 0.9.2, V1 is the "
            "default where the platform supports it (VLLM_USE_V1 unset means 1) and the dtype "
            "check is answered as for bf16; the oracle's other checks stay."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.9.2/vllm/engine/arg_utils.py",
        remove_when="the window starts at 0.9.2 or later",
        signature="(self, model_config)",
        needs="V1_SUPPORTED_DTYPES",
    ),
)
