"""A tiny model built locally from a seed, so the demo runs with nothing downloaded.

The tests build theirs (other architectures, LLaVA) on this too. The weights are random
but fixed by the seed; their scale is raised from the usual 0.02 so that greedy decoding
has clear winners and vLLM and HF transformers can be compared token for token.
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


def train_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on :data:`CORPUS`, with a chat template."""
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


def build_tiny_model(
    path: str | Path,
    arch: str = "llama",
    *,
    config: dict[str, Any] | None = None,
    embedding_scale: float = 1.0,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    max_positions: int = 256,
    init_scale: float = 0.15,
) -> Path:
    """Write a random HF ``arch`` model (GQA, head_dim = hidden / heads unless ``config``, HF
    config fields that override the sizes here, sets it) and its tokenizer to ``path``;
    ``embedding_scale`` scales the input embedding after initialisation. A second call with
    the same recipe reuses what is there."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    marker = path / "tiny-model.json"
    extra = config or {}
    recipe = {
        "arch": arch, "extra": extra, "embedding_scale": embedding_scale, "seed": seed,
        "vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers,
        "num_heads": num_heads, "num_kv_heads": num_kv_heads, "max_positions": max_positions,
        "init_scale": init_scale,
    }  # fmt: skip
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return path
    tokenizer = train_tokenizer(vocab_size)
    hf_config = AutoConfig.for_model(
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
    model = AutoModelForCausalLM.from_config(hf_config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(embedding_scale)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    marker.write_text(json.dumps(recipe))
    return path
