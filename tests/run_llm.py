"""Run ``vllm.LLM`` in its own process and print the outcome as JSON (used by the e2e tests).

usage: python run_llm.py SPEC.json

SPEC has ``model``, ``llm`` (LLM kwargs), ``max_tokens`` and ``batches``, run one after
another. A batch has ``prompts`` (text, or lists of token ids) and a ``kind``:
- ``generate`` (the default): ``sampling`` holds SamplingParams kwargs over greedy
  decoding of ``max_tokens``; ``lora`` ({"name", "id", "path"}) serves it with an adapter;
  ``structured`` ({"json": schema} | {"regex": ...} | {"choice": [...]}) constrains it;
  ``images`` (an image file per prompt) gives each prompt its image as multimodal data;
- ``beam_search``: ``beam`` holds BeamSearchParams kwargs;
- ``embed``: ``LLM.embed`` (a pooling runner).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _logprobs(rows: Any) -> list[list[list[float]]] | None:
    """Each position's {token: Logprob} as [token, logprob, rank] rows (None where absent)."""
    if rows is None:
        return None
    return [
        [[token, lp.logprob, lp.rank] for token, lp in row.items()] if row else [] for row in rows
    ]


def generate(llm: Any, batch: dict[str, Any], max_tokens: int) -> tuple[list[dict], int]:
    from vllm import SamplingParams

    sampling = {"temperature": 0.0, "max_tokens": max_tokens, **batch["sampling"]}
    if "structured" in batch:
        try:  # renamed in vLLM 0.11
            from vllm.sampling_params import StructuredOutputsParams

            sampling["structured_outputs"] = StructuredOutputsParams(**batch["structured"])
        except ImportError:
            from vllm.sampling_params import GuidedDecodingParams

            sampling["guided_decoding"] = GuidedDecodingParams(**batch["structured"])
    params = SamplingParams(**sampling)
    kwargs: dict[str, Any] = {}
    if "lora" in batch:
        from vllm.lora.request import LoRARequest

        lora = batch["lora"]
        kwargs["lora_request"] = LoRARequest(lora["name"], lora["id"], lora["path"])
    # a prompt is text, or token ids (a teacher-forced sequence, scored by prompt_logprobs)
    prompts: list[Any] = [
        {"prompt_token_ids": p} if isinstance(p, list) else p for p in batch["prompts"]
    ]
    if "images" in batch:
        from PIL import Image

        prompts = [
            {"prompt": p, "multi_modal_data": {"image": Image.open(f).convert("RGB")}}
            for p, f in zip(prompts, batch["images"], strict=True)
        ]
    outputs = llm.generate(prompts, params, use_tqdm=False, **kwargs)
    rows = [
        {
            "tokens": list(o.outputs[0].token_ids),
            "text": o.outputs[0].text,
            "finish_reason": o.outputs[0].finish_reason,
            "num_cached_tokens": o.num_cached_tokens,
            "prompt_len": len(o.prompt_token_ids),
            "prompt_token_ids": list(o.prompt_token_ids),
            "logprobs": _logprobs(o.outputs[0].logprobs),
            "prompt_logprobs": _logprobs(o.prompt_logprobs),
        }
        for o in outputs
    ]
    return rows, sum(len(o.outputs[0].token_ids) for o in outputs)


def beam_search(llm: Any, batch: dict[str, Any]) -> tuple[list[dict], int]:
    from vllm.sampling_params import BeamSearchParams

    prompts = [{"prompt": p} for p in batch["prompts"]]
    outputs = llm.beam_search(prompts, BeamSearchParams(**batch["beam"]))
    rows = [
        {"beams": [{"tokens": list(s.tokens), "cum_logprob": s.cum_logprob} for s in o.sequences]}
        for o in outputs
    ]
    return rows, sum(len(s.tokens) for o in outputs for s in o.sequences)


def embed(llm: Any, batch: dict[str, Any]) -> tuple[list[dict], int]:
    outputs = llm.embed(batch["prompts"], use_tqdm=False)
    rows = [
        {"embedding": list(o.outputs.embedding), "prompt_token_ids": list(o.prompt_token_ids)}
        for o in outputs
    ]
    return rows, 0


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    from vllm import LLM

    started = time.perf_counter()
    llm = LLM(model=spec["model"], **spec["llm"])
    start_seconds = time.perf_counter() - started
    batches = []
    generated = 0
    gen_seconds = 0.0
    for batch in spec["batches"]:
        kind = batch.get("kind", "generate")
        t0 = time.perf_counter()
        if kind == "generate":
            rows, count = generate(llm, {"sampling": {}, **batch}, spec.get("max_tokens", 16))
        elif kind == "beam_search":
            rows, count = beam_search(llm, batch)
        elif kind == "embed":
            rows, count = embed(llm, batch)
        else:
            raise SystemExit(f"unknown batch kind {kind!r}")
        gen_seconds += time.perf_counter() - t0
        generated += count
        batches.append(rows)
    from vllm_ascend_compat import patching

    counters = {}
    if not spec["llm"].get("disable_log_stats", True):
        counters = {
            m.name: m.value
            for m in llm.get_metrics()
            if m.name.startswith(("vllm:prefix_cache", "vllm:gpu_prefix_cache"))
        }
    from vllm.platforms import current_platform

    result = {
        "device_type": current_platform.device_type,
        "batches": batches,
        "counters": counters,
        "engine_start_seconds": start_seconds,
        "tokens_per_second": generated / gen_seconds if generated else 0.0,
        "patches": {o.patch_id: o.status.value for o in patching.report()},
    }
    print("RESULT " + json.dumps(result), flush=True)
    del llm
