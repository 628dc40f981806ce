"""Model architectures the plugin adds to vLLM's ModelRegistry (out of tree).

The general plugin registers them by import path in every vLLM process (front end,
engine core, workers), so a checkpoint whose config names one resolves everywhere,
and nothing here is imported until vLLM builds such a model.
"""

from __future__ import annotations

MODELS = {
    "AscendCompatLlamaForCausalLM": f"{__name__}.llama:AscendCompatLlamaForCausalLM",
}


def register() -> None:
    """Add the plugin's architectures to vLLM's registry (idempotent)."""
    from vllm import ModelRegistry

    for arch, path in MODELS.items():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, path)
