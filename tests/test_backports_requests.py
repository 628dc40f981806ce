"""Reproducers for the request-validation and ngram backports, each in a fresh interpreter.

Every test runs the real installed vLLM: on a line in a patch's range it shows the bug
unpatched and its absence patched; on a line outside the range it shows the patch is
reported out of range and that upstream's own code behaves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import check_python
from packaging.version import Version

from vllm_ascend_compat.patches import ALL

pytestmark = [pytest.mark.usefixtures("vllm_release"), pytest.mark.sweep]

PATCHES = {p.id: p for p in ALL}
OOV_STOP_IDS = (
    "reject-oov-stop-token-ids-processor",
    "reject-oov-stop-token-ids-input-processor",
    "reject-oov-stop-token-ids",
)


def _applies(patch_id: str, line: str) -> bool:
    return PATCHES[patch_id].applies_to(Version(line))


def test_the_line_has_exactly_one_oov_stop_token_hook_or_the_fix(vllm_release: str) -> None:
    """The three hooks split the lines before 0.29 between them; 0.29+ have the fix."""
    hooks = [i for i in OOV_STOP_IDS if _applies(i, vllm_release)]
    assert len(hooks) == (0 if Version(vllm_release) >= Version("0.29.0") else 1), hooks


# --- 6. out-of-vocab stop_token_ids with min_tokens kill the engine (PR 54196, 0.29.0) ---

REPRO_OOV_STOP = """
from vllm import LLM, SamplingParams
from vllm_ascend_compat import patching

llm = LLM(model={model!r}, dtype="float32", max_model_len=128, max_num_seqs=4, seed=0)
vocab = llm.llm_engine.model_config.get_vocab_size()
bad = SamplingParams(max_tokens=4, min_tokens=2, stop_token_ids=[vocab + 1000])
good = SamplingParams(max_tokens=4, temperature=0.0)
print("STATUS", {{o.patch_id: o.status.value for o in patching.report()}})


def send(tag):
    try:
        llm.generate(["The quick brown fox"], bad, use_tqdm=False)
        print(tag, "ACCEPTED", flush=True)
    except Exception as err:  # ValueError, or 0.27's VLLMValidationError (a client error)
        rejected = isinstance(err, ValueError) or type(err).__name__ == "VLLMValidationError"
        print(tag, "REJECTED" if rejected else "CRASHED", type(err).__name__, err, flush=True)
    try:
        out = llm.generate(["The quick brown fox"], good, use_tqdm=False)
        print(tag, "SERVING", len(out[0].outputs[0].token_ids), flush=True)
    except Exception as err:
        print(tag, "DEAD", type(err).__name__, flush=True)


send("FIRST")  # with the plugin's patches as loaded
if {unpatch!r}:
    patching.unpatch([{unpatch!r}])  # validation runs in this (front-end) process
    send("UNPATCHED")
"""


@pytest.mark.e2e
def test_oov_stop_token_ids_with_min_tokens_reproducer(vllm_release: str, tiny_model: Path) -> None:
    """One engine: the patched front end rejects the request, then unpatched it kills the core."""
    hook = next((i for i in OOV_STOP_IDS if _applies(i, vllm_release)), None)
    code = REPRO_OOV_STOP.format(model=str(tiny_model), unpatch=hook)
    output = check_python(code, timeout=600, VLLM_ASCEND_COMPAT_CPU="1", HF_HUB_OFFLINE="1")
    first = next((line for line in output.splitlines() if line.startswith("FIRST ")), "")
    assert first.startswith("FIRST REJECTED") and "out-of-vocab" in first, output[-3000:]
    assert "FIRST SERVING 4" in output, output[-3000:]
    if hook is None:  # fixed upstream on this line
        for patch_id in OOV_STOP_IDS:
            assert f"'{patch_id}': 'out-of-range'" in output
        return
    assert f"'{hook}': 'applied'" in output
    # the bug: accepted, then the min-tokens processor's IndexError takes the engine core down
    assert "UNPATCHED REJECTED" not in output, output[-3000:]
    assert "UNPATCHED SERVING" not in output, output[-3000:]
    assert "UNPATCHED DEAD" in output, output[-3000:]
    assert "IndexError" in output, output[-3000:]  # raised in the engine core


# --- 8. bad_words entries without tokens: IndexError (HTTP 500) instead of a 400 ---

REPRO_BAD_WORDS = """
from vllm import SamplingParams
try:
    from vllm.tokenizers import get_tokenizer
except ImportError:  # before 0.13
    from vllm.transformers_utils.tokenizer import get_tokenizer
from vllm_ascend_compat import patching, plugin
if {patched}:
    plugin.general_plugin()
tokenizer = get_tokenizer({model!r})  # what the engine's input processor holds
for name, words in (("empty", [""]), ("spaces", ["   "]), ("word", ["fox"])):
    try:
        params = SamplingParams(bad_words=words)
        params.update_from_tokenizer(tokenizer)
        print(name, "ACCEPTED", params.bad_words_token_ids)
    except IndexError:
        print(name, "INDEXERROR")
    except Exception as err:  # ValueError, or 0.27's VLLMValidationError (a client error)
        rejected = isinstance(err, ValueError) or type(err).__name__ == "VLLMValidationError"
        print(name, "REJECTED" if rejected else type(err).__name__, err)
print("STATUS", {{o.patch_id: o.status.value for o in patching.report()}})
"""


def test_bad_words_without_tokens_reproducer(vllm_release: str, tiny_model: Path) -> None:
    def run(patched: bool) -> str:
        code = REPRO_BAD_WORDS.format(patched=patched, model=str(tiny_model))
        return check_python(code, VLLM_ASCEND_COMPAT_CPU="1", HF_HUB_OFFLINE="1")

    empty_fixed = not _applies("reject-empty-bad-words", vllm_release)  # 0.22.0+
    spaces_fixed = not _applies("reject-bad-words-without-tokens", vllm_release)  # 0.29.0+
    unpatched, patched = run(False), run(True)
    assert ("empty REJECTED" if empty_fixed else "empty INDEXERROR") in unpatched, unpatched
    assert ("spaces REJECTED" if spaces_fixed else "spaces INDEXERROR") in unpatched, unpatched
    for name in ("empty", "spaces"):
        assert f"{name} REJECTED" in patched, patched
    assert "empty REJECTED bad_words cannot contain an empty string" in patched
    assert "word ACCEPTED [[" in unpatched and "word ACCEPTED [[" in patched
    for patch_id, fixed in (
        ("reject-empty-bad-words", empty_fixed),
        ("reject-bad-words-without-tokens", spaces_fixed),
    ):
        assert f"'{patch_id}': '{'out-of-range' if fixed else 'applied'}'" in patched


# --- 9. ngram drafts written to the wrong request row (PR 29779, 0.12.0) ---

REPRO_NGRAM = """
import inspect
from types import SimpleNamespace
import numpy as np
from vllm_ascend_compat import patching, plugin
if {patched}:
    plugin.general_plugin()
from vllm.config import ModelConfig, SpeculativeConfig, VllmConfig
from vllm.v1.spec_decode.ngram_proposer import NgramProposer

model = ModelConfig(model={model!r}, max_model_len=64)
spec = SpeculativeConfig(
    method="ngram", num_speculative_tokens=2, prompt_lookup_min=2, prompt_lookup_max=2
)
proposer = NgramProposer(VllmConfig(model_config=model, speculative_config=spec))
# rows 0 and 2 end in an ngram seen before; row 1 sampled nothing this step, so it is skipped
rows = [[1, 2, 3, 4, 1, 2], [9, 9, 9, 9, 9, 9], [5, 6, 7, 8, 5, 6]]
token_ids = np.zeros((3, 64), dtype=np.int32)
for i, row in enumerate(rows):
    token_ids[i, : len(row)] = row
num_tokens = np.array([len(row) for row in rows], dtype=np.int32)
sampled = [[2], [], [6]]
given = dict(
    sampled_token_ids=sampled, num_tokens_no_spec=num_tokens, token_ids_cpu=token_ids,
    req_ids=["a", "b", "c"], spec_decode_unsupported_reqs=set(), num_speculative_tokens=2,
)
params = inspect.signature(proposer.propose).parameters
if "ndarray" in str(getattr(params.get("sampled_token_ids"), "annotation", "")):
    given["sampled_token_ids"] = [np.array(s, dtype=np.int32) for s in sampled]  # 0.11.1-0.11.2
if "context_token_ids" in params:  # up to 0.9.2: the runner proposes request by request
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    batch = SimpleNamespace(
        req_ids=given["req_ids"], spec_decode_unsupported_reqs=set(),
        num_tokens_no_spec=num_tokens, token_ids_cpu=token_ids, min_p_reqs=set(),
        frequency_penalties_reqs=set(), presence_penalties_reqs=set(),
        repetition_penalties_reqs=set(), num_logprobs={{}},
    )
    runner = SimpleNamespace(input_batch=batch, max_model_len=64, drafter=proposer)
    if hasattr(GPUModelRunner, "propose_ngram_draft_token_ids"):
        drafts = GPUModelRunner.propose_ngram_draft_token_ids(runner, sampled)
    else:  # 0.9.0 and 0.9.1 write the sampled token into the row first
        batch.num_tokens_no_spec = num_tokens - 1
        drafts = GPUModelRunner.generate_draft_token_ids(runner, sampled, None)
else:
    drafts = proposer.propose(**{{k: v for k, v in given.items() if k in params}})
print("DRAFTS", [list(map(int, d)) for d in drafts])
print("STATUS", {{o.patch_id: o.status.value for o in patching.report()}})
"""


def test_ngram_drafts_in_request_rows_reproducer(vllm_release: str, tiny_model: Path) -> None:
    def run(patched: bool) -> str:
        code = REPRO_NGRAM.format(patched=patched, model=str(tiny_model))
        return check_python(code, VLLM_ASCEND_COMPAT_CPU="1", HF_HUB_OFFLINE="1")

    right = "DRAFTS [[3, 4], [], [7, 8]]"
    if not _applies("ngram-drafts-in-request-rows", vllm_release):
        output = run(True)
        assert right in output, output[-3000:]  # correct upstream on this line
        assert "'ngram-drafts-in-request-rows': 'out-of-range'" in output
        return
    unpatched, patched = run(False), run(True)
    assert "DRAFTS [[3, 4], [], []]" in unpatched, unpatched[-3000:]  # row 2's draft is lost
    assert right in patched, patched[-3000:]
    assert "'ngram-drafts-in-request-rows': 'applied'" in patched
