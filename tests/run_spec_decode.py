"""Generate greedily with ngram speculative decoding in its own process; print tokens and metrics.

usage: python run_spec_decode.py SPEC.json   where SPEC has model, llm (LLM kwargs, with
speculative_config), max_tokens and batches: {"prompts": [...], "ignore_eos": bool}.
Prints ``RESULT {json}`` with the tokens of every batch and vLLM's spec-decode counters.
"""

import json
import sys
from pathlib import Path
from typing import Any


def spec_decode_counters(llm: Any) -> dict[str, Any]:
    """vLLM's ``vllm:spec_decode_*`` counters, summed over engines (labels dropped)."""
    from vllm.v1.metrics.reader import Counter, Vector

    counters: dict[str, Any] = {}
    for metric in llm.get_metrics():
        if not metric.name.startswith("vllm:spec_decode"):
            continue
        if isinstance(metric, Counter):
            counters[metric.name] = counters.get(metric.name, 0) + metric.value
        elif isinstance(metric, Vector):  # accepted tokens per draft position
            counters[metric.name] = list(metric.values)
    return counters


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    from vllm import LLM, SamplingParams

    llm = LLM(model=spec["model"], **{**spec["llm"], "disable_log_stats": False})
    batches = []
    for batch in spec["batches"]:
        params = SamplingParams(
            temperature=0.0, max_tokens=spec["max_tokens"], ignore_eos=batch["ignore_eos"]
        )
        outputs = llm.generate(batch["prompts"], params, use_tqdm=False)
        batches.append([list(o.outputs[0].token_ids) for o in outputs])
    from vllm_ascend_compat import patching

    result = {
        "batches": batches,
        "metrics": spec_decode_counters(llm),
        "patches": {o.patch_id: o.status.value for o in patching.report()},
    }
    print("RESULT " + json.dumps(result), flush=True)
    del llm
