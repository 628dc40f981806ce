"""vLLM's out-of-tree CustomOp registry, which arrived in 0.9.2 (``CustomOp.register_oot``),
and the custom-op switch of 0.9.0 and 0.9.1, which turned every such layer off.

The plugin's layers (RMSNorm, SiluAndMul, rotary, the MoE method) are registered through
the registry; 0.9.0 and 0.9.1 get the same three members 0.9.2 added.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

TARGET = "vllm.model_executor.custom_op:CustomOp"
REASON = (
    "vLLM 0.9.0 and 0.9.1 have no out-of-tree CustomOp registry: a platform cannot put its "
    "own RMSNorm, SiluAndMul or rotary embedding in the model, so they would run vLLM's "
    "torch code instead of the plugin's kernels. The registry of 0.9.2 is added: a dict of "
    "replacements, register_oot to fill it, and __new__ to instantiate the registered class."
)
UPSTREAM = "https://github.com/vllm-project/vllm/blob/v0.9.2/vllm/model_executor/custom_op.py"


def _member(name: str, impl: str) -> Patch:
    return Patch(
        id=f"custom-op-oot-{name.strip('_').replace('_', '-')}",
        target=f"{TARGET}.{name}",
        versions="<0.9.2",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.ADD_MISSING,
        impl=f"{__name__}.before_0_9_2:{impl}",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when="the window starts at 0.9.2 or later",
    )


PATCHES = (
    _member("op_registry_oot", "op_registry_oot"),
    _member("register_oot", "register_oot"),
    _member("__new__", "instantiate_registered"),
    Patch(
        id="custom-ops-on-when-eager",
        target="vllm.config:VllmConfig.__post_init__",
        versions="<0.9.2",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_9_2:custom_ops_on_when_eager",
        reason=(
            "vLLM 0.9.0 and 0.9.1 set custom_ops to ['none'] for a V1 model that is not "
            "eager, because inductor would compile it; the platform then makes every model "
            "eager, and nothing compiles. With every custom op off, RMSNorm, SiluAndMul and "
            "rotary run vLLM's torch code instead of the plugin's kernels, and the MoE "
            "layer runs its CUDA path and dies on _moe_C.topk_softmax. As in 0.9.2, which "
            "no longer sets it, the 'none' vLLM chose is taken back once the model is eager; "
            "a custom_ops the user set is kept."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.9.2/vllm/config.py",
        remove_when="the window starts at 0.9.2 or later",
        signature="(self)",
        needs='self.compilation_config.custom_ops = ["none"]',
    ),
)
