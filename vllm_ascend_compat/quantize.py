"""Quantize a float checkpoint to the "ascend" W8A16 format that vLLM loads through the plugin.

usage: python -m vllm_ascend_compat.quantize FLOAT_MODEL_DIR OUT_DIR

Every 2-D ``*.weight`` of a linear layer becomes int8 ``[out, in]``, symmetric per output
channel (``scale = max|w| / 127`` of its row), with the float32 scales in
``*.weight_scale``. Embeddings and the LM head stay in float. The other files
(tokenizer, generation config) are copied and config.json gains
``quantization_config``. See :mod:`vllm_ascend_compat.quantization` for the loading side.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

QUANTIZATION_CONFIG = {"quant_method": "ascend", "scheme": "w8a16"}
FLOAT_LAYERS = ("embed", "lm_head")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale[:, None]``."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return q, scale


def is_quantized(name: str, tensor: torch.Tensor) -> bool:
    return (
        tensor.dim() == 2
        and name.endswith(".weight")
        and not any(part in name for part in FLOAT_LAYERS)
    )


def quantize_checkpoint(source: str | Path, target: str | Path) -> list[str]:
    """Write the quantized checkpoint of ``source`` to ``target``; return the quantized names."""
    from safetensors.torch import load_file, save_file

    source, target = Path(source), Path(target)
    shards = sorted(source.glob("*.safetensors"))
    if not shards:
        raise SystemExit(f"{source}: no *.safetensors checkpoint")
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy(path, target / path.name)
    quantized: list[str] = []
    index: dict[str, str] = {}  # tensor name -> shard, for a sharded checkpoint's index
    for shard in shards:
        tensors = {}
        for name, tensor in load_file(shard).items():
            if is_quantized(name, tensor):
                tensors[name], tensors[f"{name}_scale"] = quantize_weight(tensor)
                quantized.append(name)
            else:
                tensors[name] = tensor
        save_file(tensors, target / shard.name, metadata={"format": "pt"})
        index.update(dict.fromkeys(tensors, shard.name))
    index_file = target / "model.safetensors.index.json"
    if index_file.exists():
        listing = json.loads(index_file.read_text())
        listing["weight_map"] = index
        index_file.write_text(json.dumps(listing, indent=2))
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = QUANTIZATION_CONFIG
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return quantized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="float model directory (safetensors)")
    parser.add_argument("target", help="output directory")
    args = parser.parse_args()
    names = quantize_checkpoint(args.source, args.target)
    print(f"quantized {len(names)} weights to int8 (W8A16) in {args.target}")


if __name__ == "__main__":
    main()
