"""Linear weights in the layout the device's matmul is fastest on, made once after loading."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

REMOVE_WHEN = "vLLM gives platforms a hook to prepare linear weights"

PATCHES = (
    Patch(
        id="device-linear-weights",
        target=(
            "vllm.model_executor.layers.linear:"
            "UnquantizedLinearMethod.process_weights_after_loading"
        ),
        versions="",  # every release: before 0.9.2 the method is the base class's no-op
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.every_release:linear_after_vllms_own",
        reason=(
            "vLLM's unquantized linear layers multiply by the weight as loaded, and prepare "
            "it per device only for its own platforms (oneDNN prepacking on its CPU "
            "backend). On an NPU the weight is cast to FRACTAL_NZ, as vllm-ascend does; in "
            "CPU mode it is prepacked for torch's oneDNN linear, 2-3x faster than F.linear."
        ),
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature="(self, layer)",
    ),
    Patch(
        id="device-lm-head-weights",
        target=(
            "vllm.model_executor.layers.vocab_parallel_embedding:"
            "UnquantizedEmbeddingMethod.process_weights_after_loading"
        ),
        versions="",  # every release: before 0.10.2 the method is the base class's no-op
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.every_release:embedding_after_vllms_own",
        reason=(
            "The LM head's logits are one more unquantized matmul per step, by a weight "
            "vLLM prepares only on its own platforms. In CPU mode it gets a copy prepacked "
            "for torch's oneDNN linear, as vLLM's CPU backend keeps one; nothing changes "
            "on an NPU."
        ),
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature="(self, layer)",
    ),
)
