"""Quantize a float checkpoint into msModelSlim's format, which vLLM loads as "ascend".

usage: python -m vllm_ascend_compat.quantize FLOAT_MODEL_DIR OUT_DIR [--scheme SCHEME]

SCHEME is ``w8a16`` (default), ``w8a8`` (static activations, calibrated here on a few
sentences through HF transformers) or ``w8a8_dynamic``. Every 2-D ``*.weight`` of a
linear layer becomes int8 ``[out, in]``, symmetric per output channel (``scale =
max|w| / 127`` of its row), with the tensors of its scheme beside it; embeddings and the
LM head stay in float. ``quant_model_description.json`` names each tensor's scheme
(``FLOAT`` for the rest); config.json is written without ``quantization_config``, as
msModelSlim does. For a test tool and small models: it holds the model in memory, and
it is no substitute for msModelSlim's calibration and outlier handling.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from vllm_ascend_compat.quantization import DESCRIPTION, FLOAT

SCHEMES = {"w8a16": "W8A16", "w8a8": "W8A8", "w8a8_dynamic": "W8A8_DYNAMIC"}
FLOAT_LAYERS = ("embed", "lm_head")
CALIBRATION = [
    "The quick brown fox jumps over the lazy dog.",
    "Ascend NPUs run large language models with vLLM.",
    "A paged key value cache stores attention state in fixed size blocks.",
    "Once upon a time there was a small model that generated text.",
]


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale[:, None]``."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return q, scale


def activation_params(low: float, high: float) -> tuple[float, float]:
    """Asymmetric per-tensor int8 for inputs seen in ``[low, high]``: ``(scale, offset)``
    with ``x_q = round(x / scale + offset)`` mapping low to -128 and high to 127."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255
    return scale, float(round(-128 - low / scale))


def is_quantized(name: str, tensor: torch.Tensor) -> bool:
    return (
        tensor.dim() == 2
        and name.endswith(".weight")
        and not any(part in name for part in FLOAT_LAYERS)
    )


def calibrate(source: Path, layers: list[str]) -> dict[str, tuple[float, float]]:
    """The range of each linear layer's input over :data:`CALIBRATION`, by layer name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    ranges: dict[str, tuple[float, float]] = {}

    def record(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            low, high = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(low, args[0].min().item()), max(high, args[0].max().item()))

        return hook

    modules = dict(model.named_modules())
    for name in layers:
        modules[name].register_forward_pre_hook(record(name))
    with torch.no_grad():
        for text in CALIBRATION:
            model(**tokenizer(text, return_tensors="pt"))
    return ranges


def quantize_layer(
    scheme: str, weight: torch.Tensor, bias: torch.Tensor | None, act: tuple[float, float] | None
) -> dict[str, torch.Tensor]:
    """The tensors of one linear layer in ``scheme``, named by their suffix."""
    q, scale = quantize_weight(weight)
    n = q.shape[0]
    tensors = {"weight": q}
    if scheme != "W8A8":
        tensors["weight_scale"] = scale.unsqueeze(1)
        tensors["weight_offset"] = torch.zeros(n, 1)
        return tensors
    assert act is not None
    s_x, o_x = activation_params(*act)
    deq_scale = (s_x * scale.double()).float()
    float_bias = torch.zeros(n, dtype=torch.float64) if bias is None else bias.double()
    correction = o_x * q.double().sum(dim=1)
    tensors["input_scale"] = torch.tensor([s_x], dtype=torch.float32)
    tensors["input_offset"] = torch.tensor([o_x], dtype=torch.float32)
    tensors["quant_bias"] = torch.round(float_bias / deq_scale.double() - correction).int()
    if weight.dtype == torch.float16:  # fp16 checkpoints: the float32 bits in an int64
        tensors["deq_scale"] = deq_scale.view(torch.int32).to(torch.int64)
    else:
        tensors["deq_scale"] = deq_scale
    return tensors


def quantize_checkpoint(source: str | Path, target: str | Path, scheme: str = "w8a16") -> list[str]:
    """Write the ``scheme`` checkpoint of ``source`` to ``target``; return the quantized
    weights' names."""
    from safetensors.torch import load_file, save_file

    kind = SCHEMES[scheme]
    source, target = Path(source), Path(target)
    shards = sorted(source.glob("*.safetensors"))
    if not shards:
        raise SystemExit(f"{source}: no *.safetensors checkpoint")
    loaded = {shard: load_file(shard) for shard in shards}
    names = [n for tensors in loaded.values() for n, t in tensors.items() if is_quantized(n, t)]
    layers = [name.removesuffix(".weight") for name in names]
    ranges = calibrate(source, layers) if kind == "W8A8" else {}
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy(path, target / path.name)
    description: dict[str, str] = {"model_quant_type": kind, "version": "1.0.0"}
    index: dict[str, str] = {}  # tensor name -> shard, for a sharded checkpoint's index
    for shard, tensors in loaded.items():
        written: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            layer = name.rsplit(".", 1)[0]
            if layer in layers and name.endswith(".weight"):
                act = ranges.get(layer)
                bias = tensors.get(f"{layer}.bias")
                for suffix, value in quantize_layer(kind, tensor, bias, act).items():
                    written[f"{layer}.{suffix}"] = value
            else:  # float tensors, and quantized layers' biases (W8A8: folded, unused)
                written[name] = tensor
        for name in written:
            description[name] = kind if name.rsplit(".", 1)[0] in layers else FLOAT
        save_file(written, target / shard.name, metadata={"format": "pt"})
        index.update(dict.fromkeys(written, shard.name))
    index_file = target / "model.safetensors.index.json"
    if index_file.exists():
        listing = json.loads(index_file.read_text())
        listing["weight_map"] = index
        index_file.write_text(json.dumps(listing, indent=2))
    config = json.loads((source / "config.json").read_text())
    config.pop("quantization_config", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    (target / DESCRIPTION).write_text(json.dumps(description, indent=2))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="float model directory (safetensors)")
    parser.add_argument("target", help="output directory")
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="w8a16")
    args = parser.parse_args()
    names = quantize_checkpoint(args.source, args.target, args.scheme)
    print(f"quantized {len(names)} weights to int8 ({SCHEMES[args.scheme]}) in {args.target}")


if __name__ == "__main__":
    main()
