"""Offline generation through the plugin with a tiny model built on the spot.

``python -m vllm_ascend_compat.demo`` runs on the NPU when torch_npu sees one, and
in CPU mode otherwise (``--cpu`` forces CPU mode). It prints which copy of the plugin
runs (a checkout's, from its root), the generated text, the decode speed and the patch
report.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import vllm_ascend_compat
from vllm_ascend_compat import envs

PROMPTS = [
    "The quick brown fox",
    "Once upon a time there was a small model",
    "Ascend NPUs run large language models with vLLM.",
    "Prefix caching reuses the blocks of prompts that share a beginning.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", action="store_true", help="force CPU mode")
    parser.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "tiny-llama"))
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"vllm-ascend-compat {vllm_ascend_compat.__version__} "
          f"from {Path(vllm_ascend_compat.__file__).parent}")  # fmt: skip

    from vllm_ascend_compat import activation

    if args.cpu or not activation.decide().active:
        os.environ[envs.CPU_MODE] = "1"
        activation.decide.cache_clear()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vllm_ascend_compat.tiny_model import build_tiny_model

    model = build_tiny_model(args.model_dir)
    from vllm import LLM, SamplingParams

    from vllm_ascend_compat import patching

    started = time.perf_counter()
    llm = LLM(model=str(model), dtype="float32", max_model_len=256, enable_prefix_caching=True)
    print(f"engine started in {time.perf_counter() - started:.1f} s "
          f"on {activation.decide().device}")  # fmt: skip
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(PROMPTS[:1], params, use_tqdm=False)  # first-call warm-up, not timed
    started = time.perf_counter()
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    for output in outputs:
        print(f"\nprompt:    {output.prompt!r}\ngenerated: {output.outputs[0].text!r}")
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    print(f"\n{tokens} tokens in {seconds:.2f} s: {tokens / seconds:.0f} tokens/s "
          f"({len(PROMPTS)} prompts in one batch)")  # fmt: skip
    print("\npatch report (this process):")
    for outcome in patching.report():
        print(f"  {outcome.patch_id:<34} {outcome.status.value:<13} {outcome.detail}")


if __name__ == "__main__":
    main()
