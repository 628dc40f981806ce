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


def hf_own_error(model: Path, dtype: str, paths: list[list[int]], rows: list[Any]) -> dict:
    """HF's own run in ``dtype`` against its float32 ``rows``: the largest and the mean
    |error| of the logprob of each path's next token."""
    import torch
    from transformers import AutoModelForCausalLM

    low = AutoModelForCausalLM.from_pretrained(model, attn_implementation="eager")
    low = low.to(getattr(torch, dtype)).eval()
    errors = []
    with torch.no_grad():
        for path, want in zip(paths, rows, strict=True):
            got = torch.log_softmax(low(torch.tensor([path])).logits[0].float(), dim=-1)
            ahead = torch.tensor(path[1:])[:, None]
            errors.append((got[:-1].gather(1, ahead) - want[:-1].gather(1, ahead)).abs())
    every = torch.cat(errors)
    return {"max": float(every.max()), "mean": float(every.mean())}


def top2_margin(row: Any) -> float:
    top = row.topk(2).values
    return float(top[0] - top[1])


def check_scored(
    path: list[int], scored: list[Any], rows: Any, limit: float, where: str
) -> list[float]:
    """Positions of ``path`` that vLLM scored (``scored[i]``: its [token, logprob, rank] rows
    for token i) against HF's float32 ``rows`` along the same path: each logprob within
    ``limit``, and vLLM's top-1 is HF's wherever HF's top-2 margin exceeds ``limit``.
    Returns the |errors|."""
    errors = []
    for i, entries in scored:
        ranked = {int(t): (lp, rank) for t, lp, rank in entries}
        got = ranked[path[i]][0]
        errors.append(abs(got - float(rows[i - 1][path[i]])))
        assert errors[-1] <= limit, f"{where} position {i}: {got} vs HF {rows[i - 1][path[i]]}"
        if top2_margin(rows[i - 1]) > limit:
            top1 = next(t for t, (_, rank) in ranked.items() if rank == 1)
            assert top1 == int(rows[i - 1].argmax()), f"{where} position {i}: top-1 {top1}"
    return errors


def worst_logprob_error(model_path: str | Path, outputs: list[dict[str, Any]]) -> float:
    """The largest |error| of a generated token's returned logprob (``logprobs``: 1) against
    HF's float32 log_softmax along the same tokens, over ``outputs`` (run_llm.py rows)."""
    sequences = [out["prompt_token_ids"] + out["tokens"] for out in outputs]
    worst = 0.0
    for out, hf in zip(outputs, hf_log_softmax(model_path, sequences), strict=True):
        start = out["prompt_len"] - 1
        for i, (token, row) in enumerate(zip(out["tokens"], out["logprobs"], strict=True)):
            logprob = next(lp for t, lp, _ in row if t == token)
            worst = max(worst, abs(logprob - float(hf[start + i, token])))
    return worst
