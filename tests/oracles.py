"""The oracles the end-to-end tests compare vLLM with: HF transformers in float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
