"""Run ``vllm.LLM`` in its own process and print the outcome as JSON (used by the e2e tests).

usage: python run_llm.py SPEC.json   where SPEC has model, llm (LLM kwargs), max_tokens and
batches: {"prompts": [...], "ignore_eos": bool}, generated one batch after another.
"""

import json
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=spec["model"], **spec["llm"])
    start_seconds = time.perf_counter() - started
    batches = []
    generated = 0
    gen_seconds = 0.0
    for batch in spec["batches"]:
        params = SamplingParams(
            temperature=0.0, max_tokens=spec["max_tokens"], ignore_eos=batch["ignore_eos"]
        )
        t0 = time.perf_counter()
        outputs = llm.generate(batch["prompts"], params, use_tqdm=False)
        gen_seconds += time.perf_counter() - t0
        batches.append(
            [
                {
                    "tokens": list(o.outputs[0].token_ids),
                    "text": o.outputs[0].text,
                    "finish_reason": o.outputs[0].finish_reason,
                    "num_cached_tokens": o.num_cached_tokens,
                    "prompt_len": len(o.prompt_token_ids),
                }
                for o in outputs
            ]
        )
        generated += sum(len(o.outputs[0].token_ids) for o in outputs)
    from vllm_ascend_compat import patching

    counters = {}
    if not spec["llm"].get("disable_log_stats", True):
        counters = {
            m.name: m.value for m in llm.get_metrics() if m.name.startswith("vllm:prefix_cache")
        }
    result = {
        "batches": batches,
        "counters": counters,
        "engine_start_seconds": start_seconds,
        "tokens_per_second": generated / gen_seconds,
        "patches": {o.patch_id: o.status.value for o in patching.report()},
    }
    print("RESULT " + json.dumps(result), flush=True)
    del llm
