"""A vision-language model through the plugin in CPU mode: LLaVA takes an image end to end.

The tiny LLaVA (CLIP vision tower, projector, Llama) is built locally with its processor;
the images are seeded noise. vLLM runs the vision encoder on the platform's ViT attention
and the text model on the plugin's paged attention; one image straddles two prefill chunks.
One engine start; the oracle is HF transformers' greedy ``generate`` on the same processor
inputs (eager attention, float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import CHUNK, run_spec
from tiny_models import build_tiny_llava

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

QUESTIONS = [
    "USER: <image>\nWhat is in the image? ASSISTANT:",
    # the image's 16 tokens start at position 17: they straddle the first prefill chunk (32)
    "USER: Greedy decoding picks the most likely next token. <image>\nDescribe it. ASSISTANT:",
]
# (question, image seed): two images under one question, one image under two questions
PROMPTS = [(QUESTIONS[0], 0), (QUESTIONS[0], 1), (QUESTIONS[1], 0)]
MAX_TOKENS = 16
IMAGE_TOKENS = 16  # (32 / 8)^2 patches; the CLS token is dropped


def _image(seed: int, size: int = 32) -> Any:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _hf(model_path: Path) -> tuple[list[list[int]], list[list[int]], list[Any]]:
    """HF's processor ids, greedy tokens, and each step's log_softmax, per prompt.

    The log_softmax comes from ``generate``'s own logits: a forward over the whole
    sequence would take a generated ``<image>`` token for an image placeholder."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_path)
    model = LlavaForConditionalGeneration.from_pretrained(model_path, attn_implementation="eager")
    model = model.float().eval()
    ids, greedy, log_softmax = [], [], []
    for question, seed in PROMPTS:
        inputs = processor(images=_image(seed), text=question, return_tensors="pt")
        prompt = inputs["input_ids"]
        with torch.no_grad():
            generated = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                pixel_values=inputs["pixel_values"].float(),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                eos_token_id=None,  # vLLM's ignore_eos
                pad_token_id=model.config.text_config.eos_token_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
        ids.append(prompt[0].tolist())
        greedy.append(generated.sequences[0, prompt.shape[1] :].tolist())
        log_softmax.append(torch.log_softmax(torch.cat(generated.logits).float(), dim=-1))
    return ids, greedy, log_softmax


@pytest.mark.feature("multimodal")
def test_llava_image_prompts_equal_hf(tmp_path: Path) -> None:
    """vLLM's prompt ids (image placeholders expanded) equal HF's processor's, its greedy
    tokens equal HF's, each token's logprob is HF's within 1e-4, and the image matters."""
    model = build_tiny_llava(tmp_path / "llava")
    images = []
    for seed in sorted({seed for _, seed in PROMPTS}):
        images.append(tmp_path / f"image-{seed}.png")
        _image(seed).save(images[-1])
    batch = {
        "prompts": [question for question, _ in PROMPTS],
        "images": [str(images[seed]) for _, seed in PROMPTS],
        # EOS ignored: each transformers release draws other random weights, and some
        # answer with EOS first
        "sampling": {"max_tokens": MAX_TOKENS, "ignore_eos": True, "logprobs": 1},
    }
    run = run_spec(model, tmp_path, [batch])
    outputs = run["batches"][0]
    hf_ids, hf_tokens, hf_log_softmax = _hf(model)
    worst = 0.0
    for out, ids, want, hf in zip(outputs, hf_ids, hf_tokens, hf_log_softmax, strict=True):
        assert out["prompt_token_ids"] == ids, "vLLM expanded the image placeholder differently"
        assert out["tokens"] == want, f"vLLM {out['tokens']} vs HF {want}"
        for i, (token, row) in enumerate(zip(out["tokens"], out["logprobs"], strict=True)):
            logprob = next(lp for t, lp, _ in row if t == token)
            worst = max(worst, abs(logprob - float(hf[i, token])))
    from transformers import AutoConfig

    image_token = AutoConfig.from_pretrained(model).image_token_index
    assert all(ids.count(image_token) == IMAGE_TOKENS for ids in hf_ids)
    start = hf_ids[2].index(image_token)
    assert start < CHUNK < start + IMAGE_TOKENS, "the image should straddle two prefill chunks"
    # the same question over two images answers differently: the pixels reach the model
    assert outputs[0]["tokens"] != outputs[1]["tokens"]
    print(f"llava: {sum(len(o['tokens']) for o in outputs)} tokens equal HF; worst logprob "
          f"error {worst:.2e}; engine start {run['engine_start_seconds']:.1f}s")  # fmt: skip
    assert worst < 1e-4
