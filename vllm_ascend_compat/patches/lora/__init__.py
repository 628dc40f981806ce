"""LoRA's punica wrapper helpers, ``vllm.lora.punica_wrapper.utils``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="lora-mapping-pin-memory-from-platform",
        target="vllm.lora.punica_wrapper.utils:async_tensor_h2d",
        versions=">=0.22.0,<0.24.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_24:pin_memory_from_platform",
        reason=(
            "convert_mapping copies the LoRA indices with async_tensor_h2d, whose pin_memory "
            "default is PIN_MEMORY = 'not WSL', whatever the platform says. A host without "
            "a pinned allocator (CPU mode) fails the first LoRA step at engine start. Ask "
            "the platform, as 0.24 does (PIN_MEMORY = is_pin_memory_available())."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.24.0/vllm/utils/torch_utils.py",
        remove_when="every supported line is 0.24.0 or newer",
        signature="(data, dtype, device, pin_memory)",
    ),
)
