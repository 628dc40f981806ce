"""Tiny models built locally from a seed, so the CPU mode runs with nothing downloaded.

Used by the demo, the tests and the benchmarks. The weights are random but fixed
by the seed; their scale is raised from the usual 0.02 so that greedy decoding has
clear winners and vLLM and HF transformers can be compared token for token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ascend NPUs run large language models with vLLM.",
    "A paged key value cache stores attention state in fixed size blocks.",
    "Chunked prefill splits long prompts into pieces that fit one step.",
    "Prefix caching reuses the blocks of prompts that share a beginning.",
    "Tensor parallel inference splits every layer across devices.",
    "Greedy decoding picks the most likely next token every time.",
    "Once upon a time there was a small model that generated text.",
    "Numbers like 1 2 3 4 5 6 7 8 9 10 and words like alpha beta gamma.",
]


def _tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=(
            "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}"
        ),
    )


# Architecture -> the config fields that give it its distinguishing feature at tiny size.
# Windows are shorter than the test prompts, soft caps low enough to bind.
TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {},
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
}


def build_tiny_model(
    path: str | Path,
    arch: str,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    max_positions: int = 256,
    init_scale: float = 0.15,
) -> Path:
    """Write a random ``arch`` model of :data:`TINY_ARCHITECTURES` (GQA, head_dim = hidden /
    heads unless the architecture sets it) and its tokenizer to ``path``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    marker = path / "tiny-model.json"
    extra = TINY_ARCHITECTURES[arch]
    recipe = {
        "arch": arch, "extra": extra, "seed": seed, "vocab_size": vocab_size,
        "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
        "num_kv_heads": num_kv_heads, "max_positions": max_positions, "init_scale": init_scale,
    }  # fmt: skip
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return path
    tokenizer = _tokenizer(vocab_size)
    config = AutoConfig.for_model(
        arch,
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "max_position_embeddings": max_positions,
            "initializer_range": init_scale,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.eos_token_id,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            **extra,
        },
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    if arch == "gemma2":  # its tied head reads the input embedding, scaled up by sqrt(hidden):
        with torch.no_grad():  # damped, so greedy does not just echo the last token
            model.get_input_embeddings().weight /= 4
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    marker.write_text(json.dumps(recipe))
    return path


def hf_greedy(
    model_path: str | Path, prompts: list[str], max_tokens: int, *, ignore_eos: bool = False
) -> list[list[int]]:
    """The oracle: HF transformers' own greedy ``generate`` in float32, new tokens only."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = [tokenizer(prompt).input_ids for prompt in prompts]
    return hf_greedy_ids(model_path, ids, max_tokens, ignore_eos=ignore_eos)


def hf_greedy_ids(
    model_path: str | Path, prompts: list[list[int]], max_tokens: int, *, ignore_eos: bool = False
) -> list[list[int]]:
    """:func:`hf_greedy` for prompts given as token ids."""
    import torch
    from transformers import AutoModelForCausalLM

    # eager: HF's reference attention, the one that applies Gemma-2's logit soft-capping
    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="eager")
    model = model.float().eval()  # any transformers
    eos = None if ignore_eos else model.config.eos_token_id
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        limit = min(max_tokens, model.config.max_position_embeddings - ids.shape[1])
        with torch.no_grad():
            generated = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=limit,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=model.config.eos_token_id,
            )
        outputs.append(generated[0, ids.shape[1] :].tolist())
    return outputs


def hf_log_softmax(model_path: str | Path, sequences: list[list[int]]) -> list[Any]:
    """The oracle for logprobs: log_softmax of HF's float32 logits at every position of each
    token sequence ([len, vocab] tensors; row i is the distribution of token i + 1)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="eager")
    model = model.float().eval()  # eager: as hf_greedy_ids
    with torch.no_grad():
        return [
            torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            for ids in sequences
        ]


def hf_beam_search(
    model_path: str | Path, prompts: list[list[int]], beam_width: int, max_tokens: int
) -> list[list[list[int]]]:
    """The oracle for beam search: HF's beams, best first, prompt included, EOS not stopping
    a beam (as vLLM's ``ignore_eos``)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path).float().eval()
    model.generation_config.eos_token_id = None  # a None argument would mean "the default"
    beams = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            generated = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                num_beams=beam_width,
                num_return_sequences=beam_width,
                max_new_tokens=max_tokens,
                do_sample=False,
                length_penalty=1.0,
                early_stopping=False,
                eos_token_id=None,
                pad_token_id=model.config.eos_token_id,
            )
        beams.append(generated.tolist())
    return beams


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
    tokenizer = _tokenizer(vocab_size)
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
