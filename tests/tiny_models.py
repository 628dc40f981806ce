"""The tiny models the tests alone use, built locally from a seed on the demo's builder
(vllm_ascend_compat.tiny_model): one per architecture beyond Llama, and a LLaVA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vllm_ascend_compat.tiny_model import build_tiny_model, train_tokenizer

# Architecture -> the config fields that give it its distinguishing feature at tiny size.
# Windows are shorter than the test prompts, soft caps low enough to bind.
TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen2": {},  # q/k/v projections with bias
    "qwen3": {"head_dim": 64},  # q/k RMSNorm per head; its default head_dim is 128
    "mistral": {"sliding_window": 8},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
    "gemma2": {
        "head_dim": 64,
        "hidden_act": "gelu_pytorch_tanh",  # vLLM reads this name, HF hidden_activation
        "query_pre_attn_scalar": 64,
        "sliding_window": 8,  # on every other layer
        "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 5.0,
        "tie_word_embeddings": True,  # vLLM's Gemma-2 always ties the LM head
    },
    # MLA (a q LoRA, a 32-wide latent KV, a decoupled 16-wide rope key), YaRN; layer 0
    # dense, then DeepSeek MoE: 8 sigmoid-scored experts in 4 groups (top-2 groups), top-2
    # experts, a shared expert, the scaling factor
    "deepseek_v3": {
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 48,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 24,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 4,
        "topk_group": 2,
        "n_shared_experts": 1,
        "moe_intermediate_size": 64,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,  # DeepSeek's own config has it; vLLM up to 0.11.0 reads it
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "rope_scaling": {
            "type": "yarn",
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    },
}


def build_arch(path: str | Path, arch: str) -> Path:
    """The tiny model of ``arch``, one of :data:`TINY_ARCHITECTURES`."""
    # Gemma-2's tied head reads the input embedding, scaled up by sqrt(hidden): damped, so
    # greedy does not just echo the last token
    scale = 0.25 if arch == "gemma2" else 1.0
    path = build_tiny_model(path, arch, config=TINY_ARCHITECTURES[arch], embedding_scale=scale)
    if arch == "deepseek_v3":
        _randomize_correction_bias(path)
    return path


def _randomize_correction_bias(path: Path) -> None:
    """DeepSeek's routing bias starts at zero in HF, where it would change no choice: set
    it to fixed positive values, which move the top-k. Positive, so biased scores stay
    above the zero HF masks dropped groups with."""
    import torch
    from safetensors.torch import load_file, save_file

    (weights_file,) = path.glob("*.safetensors")
    weights = load_file(weights_file)
    unset = sorted(n for n, t in weights.items() if n.endswith("correction_bias") and not t.any())
    if not unset:  # already set: a rebuild reused the model
        return
    generator = torch.Generator().manual_seed(1)
    for name in unset:
        weights[name] = torch.rand(weights[name].shape, generator=generator) * 0.2
    save_file(weights, weights_file, metadata={"format": "pt"})


def build_tiny_llava(
    path: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 128,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden_size: int = 64,
    init_scale: float = 0.15,
) -> Path:
    """Write a random LLaVA (CLIP vision tower, MLP projector, :func:`build_tiny_model`'s Llama text
    model) with its processor, so vLLM's multimodal processing runs offline.

    The image processor config is written as JSON, not through a class: transformers 5
    names the torchvision-free CLIP processor differently, and each release loads the
    JSON with the backend it has."""
    import torch
    from transformers import (
        AutoImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    marker = path / "tiny-model.json"
    recipe = {
        "arch": "llava", "seed": seed, "vocab_size": vocab_size, "hidden_size": hidden_size,
        "image_size": image_size, "patch_size": patch_size,
        "vision_hidden_size": vision_hidden_size, "init_scale": init_scale,
    }  # fmt: skip
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return path
    tokenizer = train_tokenizer(vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = LlamaConfig(
        architectures=["LlamaForCausalLM"],  # vLLM builds the text model from this name
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        initializer_range=init_scale,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=2,  # the projector reads the layer before the last (default -2)
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",  # the patch tokens, without CLS
        vision_feature_layer=-2,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    _hub_clip_layout(path / "model.safetensors")
    (path / "preprocessor_config.json").write_text(
        json.dumps({
            "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "do_resize": True, "do_center_crop": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
        })
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(path),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLS, dropped by the "default" strategy
    )
    processor.save_pretrained(path)
    marker.write_text(json.dumps(recipe))
    return path


def _hub_clip_layout(checkpoint: Path) -> None:
    """Write the vision tower under ``vision_tower.vision_model.``, as LLaVA checkpoints on
    the Hub have it. transformers 5.19+ saves CLIP without that level; it reads both
    layouts, but vLLM's loader (0.32.0 included) reads only the Hub's."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint)
    flat = "vision_tower."
    if any(k.startswith(flat) and not k.startswith(flat + "vision_model.") for k in tensors):
        tensors = {
            flat + "vision_model." + k[len(flat) :] if k.startswith(flat) else k: v
            for k, v in tensors.items()
        }
        save_file(tensors, checkpoint, metadata={"format": "pt"})
