"""A tiny LoRA adapter for the tiny Llama, written by hand in peft's format, and its oracle.

The oracle is the base model with the adapter merged into its weights
(W' = W + alpha / r * B @ A), saved as a plain model directory so HF transformers
runs it without peft.
"""

from __future__ import annotations

import json
from pathlib import Path

RANK = 8
ALPHA = 16
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
TARGETS = ATTENTION + MLP  # vLLM packs these into qkv_proj and gate_up_proj
SCALE = 0.1  # std of A and B: the merged delta is large enough to change greedy tokens


def _module(layer: int, name: str) -> str:
    block = "self_attn" if name in ATTENTION else "mlp"
    return f"model.layers.{layer}.{block}.{name}"


def write_adapter(base: Path, path: Path, seed: int = 1) -> Path:
    """Write adapter_config.json and adapter_model.safetensors for ``base`` to ``path``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    hidden, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * hidden // config.num_attention_heads
    shapes = {  # (out, in) of each target projection
        "q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
        "o_proj": (hidden, hidden), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for name in TARGETS:
            out, inp = shapes[name]
            prefix = f"base_model.model.{_module(layer, name)}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(RANK, inp, generator=generator) * SCALE
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out, RANK, generator=generator) * SCALE
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base),
        "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "bias": "none",
        "target_modules": TARGETS, "fan_in_fan_out": False, "use_rslora": False,
        "modules_to_save": None,
    }))  # fmt: skip
    return path


def write_merged(base: Path, adapter: Path, path: Path) -> Path:
    """Save ``base`` with ``adapter`` merged into its weights (and its tokenizer) to ``path``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((adapter / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(base).float()
    weights = model.state_dict()
    with torch.no_grad():
        for key, a in lora.items():
            if not key.endswith(".lora_A.weight"):
                continue
            b = lora[key.replace("lora_A", "lora_B")]
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            weights[f"{module}.weight"] += scaling * (b @ a)
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return path
