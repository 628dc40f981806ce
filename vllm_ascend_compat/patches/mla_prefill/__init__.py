"""The MLA prefill backend vLLM's MLA layer builds (0.21 to 0.31, before the platform hook)."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

SELECTOR = "vllm.v1.attention.backends.mla.prefill.selector:_auto_select_mla_prefill_backend"

PATCHES = (
    Patch(
        id="mla-prefill-backend",
        target="vllm.model_executor.layers.attention.mla_attention:get_mla_prefill_backend",
        versions=">=0.21.0,<0.32.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_32:the_plugins_prefill_backend",
        reason=(
            "From 0.21 vLLM's MLAAttention layer picks and builds an MLA prefill backend in "
            "its constructor, whatever the attention backend. With no device capability it "
            "picks FlashAttention's, whose module does not import without vLLM's CUDA "
            "kernels, and no DeepSeek model can be built. The plugin's MLA impl attends "
            "prefills itself: the layer gets the plugin's prefill backend, which nothing "
            "calls. 0.32 asks the platform instead (get_mla_prefill_backend_cls)."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/v1/attention/backends/mla/prefill/selector.py",
        remove_when="the window starts at 0.32.0 or later",
        signature="(vllm_config)",
        needs=(
            "vllm.model_executor.layers.attention.mla_attention:MLAAttention.__init__",
            "get_mla_prefill_backend(",
        ),
        fixed_by=(SELECTOR, "get_mla_prefill_backend_cls"),
    ),
)
