"""Quantization method "ascend": the checkpoints msModelSlim writes, read as vllm-ascend does.

A msModelSlim checkpoint has int8 weights in its safetensors and, beside config.json (which
has no ``quantization_config``), ``quant_model_description.json``: tensor name -> scheme,
``W8A16``, ``W8A8`` (static per-tensor activations), ``W8A8_DYNAMIC`` (per-token
activations) or ``FLOAT``. Weights are int8 ``[out, in]`` with per-channel scales; the
tensors and the math of each scheme are in docs/architecture.md. vLLM reads the
description file as this method's config file (``--quantization ascend``); without the
flag, :func:`auto_detect` picks the method when the file is there, as vllm-ascend does.

Each linear layer's scheme is its ``<prefix>.weight`` entry; a fused layer (qkv_proj,
gate_up_proj) takes the entries of its shards, named by the model's
``packed_modules_mapping``, which must agree. The linear methods of the schemes are in
quantized_linear.py, imported only when a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from vllm.model_executor.layers.quantization import (
    QUANTIZATION_METHODS,
    register_quantization_config,
)
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig

NAME = "ascend"
DESCRIPTION = "quant_model_description.json"
FLOAT = "FLOAT"


class AscendQuantConfig(QuantizationConfig):
    """msModelSlim's ``quant_model_description.json``, as vLLM hands it to ``from_config``."""

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__()
        self.description = description

    def __repr__(self) -> str:
        return f"AscendQuantConfig({len(self.description)} description entries)"

    def get_name(self) -> Any:
        return NAME

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32, torch.bfloat16, torch.float16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 0  # no CUDA capability involved

    @staticmethod
    def get_config_filenames() -> list[str]:
        return [DESCRIPTION]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AscendQuantConfig:
        return cls(config)

    def scheme(self, prefix: str) -> str:
        """The scheme of the linear layer at ``prefix``: its own entry, or its shards'."""
        *parents, name = prefix.split(".")
        shards = self.packed_modules_mapping.get(name, [name])
        keys = [".".join([*parents, shard, "weight"]) for shard in shards]
        missing = [key for key in keys if key not in self.description]
        if missing:
            raise ValueError(
                f"quantization 'ascend': {DESCRIPTION} has no entry for {missing} "
                f"(layer {prefix}); every linear layer's weight needs one, FLOAT if unquantized"
            )
        schemes = {key: self.description[key] for key in keys}
        if len(set(schemes.values())) > 1:
            raise ValueError(
                f"quantization 'ascend': layer {prefix} fuses shards with different schemes "
                f"{schemes}; vLLM runs a fused layer with one scheme, so its shards must agree"
            )
        return schemes[keys[0]]

    def linear_method(self, prefix: str) -> Any:
        from vllm.model_executor.layers.linear import UnquantizedLinearMethod

        from vllm_ascend_compat.quantized_linear import LINEAR_METHODS

        scheme = self.scheme(prefix)
        if scheme == FLOAT:
            return UnquantizedLinearMethod()
        if scheme not in LINEAR_METHODS:
            raise ValueError(
                f"quantization 'ascend': layer {prefix} has scheme {scheme!r}; this plugin "
                f"runs {sorted(LINEAR_METHODS)} and {FLOAT}"
            )
        return LINEAR_METHODS[scheme](prefix)

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> Any:
        """Per layer while the model is built, so vLLM's layers are imported by then."""
        from vllm.model_executor.layers.linear import LinearBase
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        if isinstance(layer, LinearBase):
            return self.linear_method(prefix)
        if isinstance(layer, VocabParallelEmbedding):
            scheme = self.description.get(f"{prefix}.weight", FLOAT)  # tied heads have none
            if scheme != FLOAT:
                raise ValueError(
                    f"quantization 'ascend': {prefix} is quantized ({scheme}); this plugin "
                    "runs embeddings and the LM head in float only"
                )
            return None
        if "MoE" in type(layer).__name__:
            raise NotImplementedError(
                f"quantization 'ascend' has no MoE method: {prefix} ({type(layer).__name__})"
            )
        return None  # attention and the rest: unquantized


def register() -> None:
    """Make quantization "ascend" known to vLLM in this process (idempotent)."""
    if NAME not in QUANTIZATION_METHODS:
        register_quantization_config(NAME)(AscendQuantConfig)


def allow_on_command_line(parser: Any) -> None:
    """``--quantization ascend``: releases whose option lists fixed choices (0.11) get ours."""
    action = parser._option_string_actions.get("--quantization")
    if action is not None and action.choices is not None and NAME not in action.choices:
        action.choices = [*action.choices, NAME]


def auto_detect(vllm_config: Any) -> None:
    """Without ``--quantization``, a local model directory holding msModelSlim's
    description file loads with "ascend", as vllm-ascend does. vLLM has already built the
    (absent) quant config when the platform sees the config, so it is built again here."""
    model = vllm_config.model_config
    if model.quantization is not None:
        return
    if not (Path(model.model) / DESCRIPTION).is_file():
        return
    from vllm.config import VllmConfig

    register()
    model.quantization = NAME
    vllm_config.quant_config = VllmConfig._get_quantization_config(model, vllm_config.load_config)
