"""The real patches against the real installed vLLM: apply, unapply, and each fix's reproducer."""

from __future__ import annotations

import pytest
from conftest import check_python
from packaging.version import Version

from vllm_ascend_compat.patches import ALL

pytestmark = [pytest.mark.usefixtures("vllm_release"), pytest.mark.sweep]

PATCHES = {p.id: p for p in ALL}


def _applies(patch_id: str, line: str) -> bool:
    return PATCHES[patch_id].applies_to(Version(line))


def test_apply_and_unapply_every_patch_of_this_release(vllm_release: str) -> None:
    """Every in-range patch applies to the real target and unpatching restores the originals."""
    check_python(
        """
import importlib, sys
from vllm_ascend_compat import patching, plugin, release
from vllm_ascend_compat.patches import ALL
rel = release.detect().release
mine = [p for p in ALL if p.applies_to(rel)]
originals = {}
for p in mine:
    importlib.import_module(p.module)
    owner, name, _, own = patching.resolve_target(p)
    originals[p.id] = (owner, name, vars(owner).get(name), own)
import vllm.v1.core.sched.scheduler  # holds check_stop by name
for phase in patching.Phase:
    plugin.apply_phase(phase)
for p in mine:
    owner, name, raw, _ = originals[p.id]
    assert vars(owner)[name] is not raw, p.id
    assert patching.is_applied(p.id)
patching.unpatch()
for p in mine:
    owner, name, raw, own = originals[p.id]
    if own:
        assert vars(owner)[name] is raw, p.id
    else:  # an added member (add-missing) is removed again
        assert name not in vars(owner), p.id
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )


REPRO_NON_FINITE = """
import math
from vllm import SamplingParams
from vllm_ascend_compat import plugin, patching
if {patched}:
    plugin.general_plugin()
rejected = []
for name in ("temperature", "repetition_penalty"):
    for bad in (math.nan, math.inf, -math.inf):
        try:
            SamplingParams(**{{name: bad}})
        except Exception as err:  # upstream's own fix raises VLLMValidationError
            assert isinstance(err, ValueError) or type(err).__name__ == "VLLMValidationError"
            assert "must be a finite number" in str(err) or not {patched}, err
            rejected.append((name, bad))
SamplingParams(temperature=0.7, repetition_penalty=1.1)
print("REJECTED", len(rejected))
"""


def test_non_finite_sampling_reproducer(vllm_release: str) -> None:
    if not _applies("reject-non-finite-sampling", vllm_release):
        output = check_python(REPRO_NON_FINITE.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1")
        assert "REJECTED 6" in output  # fixed upstream on this line
        return
    unpatched = check_python(REPRO_NON_FINITE.format(patched=False), VLLM_ASCEND_COMPAT_CPU="1")
    patched = check_python(REPRO_NON_FINITE.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1")
    assert "REJECTED 6" not in unpatched  # the bug: NaN/inf pass validation
    assert "REJECTED 6" in patched


REPRO_LORA_PIN_MEMORY = """
import torch
from vllm_ascend_compat import plugin
if {patched}:
    plugin.general_plugin()
from vllm.lora.punica_wrapper import utils
if not hasattr(utils, "async_tensor_h2d"):
    print("OUTCOME no-h2d")  # before 0.22 the mapping is built on the device directly
else:
    try:
        utils.async_tensor_h2d([1, 2, 3], dtype=torch.long, device="cpu")
    except RuntimeError as err:
        print("OUTCOME failed:", str(err).splitlines()[0])
    else:
        print("OUTCOME copied")
"""


def test_lora_mapping_pin_memory_reproducer(vllm_release: str) -> None:
    """CPU-only torch has no pinned allocator: 0.22-0.23 pin the LoRA mapping anyway."""
    patched = check_python(REPRO_LORA_PIN_MEMORY.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1")
    assert "OUTCOME copied" in patched or "OUTCOME no-h2d" in patched, patched
    if _applies("lora-mapping-pin-memory-from-platform", vllm_release):
        unpatched = check_python(
            REPRO_LORA_PIN_MEMORY.format(patched=False), VLLM_ASCEND_COMPAT_CPU="1"
        )
        assert "OUTCOME failed" in unpatched, unpatched  # pin_memory=True on a CPU-only torch


MAKE_REQUEST = """
import inspect
from vllm.v1.request import Request

def make_request(params, eos, prompt=(1, 2, 3)):
    # a real scheduler Request; its other parameters (multimodal fields up to 0.10,
    # eos_token_id up to 0.13) are given None or the EOS, whatever the release
    values = {"request_id": "r", "prompt_token_ids": list(prompt), "sampling_params": params}
    for name, p in inspect.signature(Request.__init__).parameters.items():
        if name not in values and name != "self" and p.default is p.empty:
            values[name] = eos if name == "eos_token_id" else None
    return Request(**values)
"""

REPRO_STOP_AT_MAX_TOKENS = """
from vllm import SamplingParams
from vllm.v1.request import Request, RequestStatus
import vllm.v1.core.sched.scheduler as scheduler
from vllm_ascend_compat import plugin
if {patched}:
    plugin.general_plugin()
STOP = 7
for stop_kind in ("eos", "stop_token"):
    stop_ids = [STOP] if stop_kind == "stop_token" else None
    params = SamplingParams(max_tokens=2, stop_token_ids=stop_ids)
    eos = STOP if stop_kind == "eos" else 99
    params.update_from_generation_config({{}}, eos)  # where the EOS lives from 0.14
    request = make_request(params, eos)
    request.append_output_token_ids([5, STOP])  # the stop comes exactly at max_tokens
    # call through the scheduler module, which imported check_stop by name
    assert scheduler.check_stop(request, max_model_len=100)
    print(stop_kind, request.status.name, request.stop_reason)
"""


def test_stop_token_at_max_tokens_reproducer(vllm_release: str) -> None:
    ids = ("stop-token-before-length-cap-no-pooling", "stop-token-before-length-cap")
    if not any(_applies(patch_id, vllm_release) for patch_id in ids):
        output = check_python(
            MAKE_REQUEST + REPRO_STOP_AT_MAX_TOKENS.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1"
        )
        assert "eos FINISHED_STOPPED None" in output  # fixed upstream on this line
        assert "stop_token FINISHED_STOPPED 7" in output
        return
    unpatched = check_python(
        MAKE_REQUEST + REPRO_STOP_AT_MAX_TOKENS.format(patched=False), VLLM_ASCEND_COMPAT_CPU="1"
    )
    patched = check_python(
        MAKE_REQUEST + REPRO_STOP_AT_MAX_TOKENS.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1"
    )
    assert "eos FINISHED_LENGTH_CAPPED" in unpatched  # the bug
    assert "eos FINISHED_STOPPED None" in patched
    assert "stop_token FINISHED_STOPPED 7" in patched


REPRO_SLOT_MAPPING = """
import torch
import vllm.v1.worker.block_table as block_table
from vllm_ascend_compat import plugin
if {patched}:
    plugin.general_plugin()
starts = torch.tensor([0, 3, 5], dtype=torch.int32)  # two requests: 3 and 2 tokens
positions = torch.tensor([0, 1, 17, 4, 5])
table = torch.tensor([[7, 2, 0], [5, 0, 0], [0, 0, 0]], dtype=torch.int32)
slots = torch.full((8,), -5, dtype=torch.int64)
try:
    block_table._compute_slot_mapping_kernel[(3,)](
        5, 8, starts, positions, table, table.stride(0), 16, slots, **KV_BLOCKS,
        TOTAL_CP_WORLD_SIZE=1, TOTAL_CP_RANK=0, CP_KV_CACHE_INTERLEAVE_SIZE=1, PAD_ID=-1,
        BLOCK_SIZE=1024,
    )
except TypeError as err:  # no Triton: the kernel is a plain function
    print("NO KERNEL", err)
print("SLOTS", slots.tolist())
"""


@pytest.mark.parametrize("patch_id", ["torch-slot-mapping", "torch-slot-mapping-kv-blocks"])
def test_torch_slot_mapping_replaces_the_triton_kernel(vllm_release: str, patch_id: str) -> None:
    if not _applies(patch_id, vllm_release):
        output = check_python(
            "from vllm_ascend_compat import plugin, patching\n"
            "plugin.general_plugin()\n"
            "print({o.patch_id: o.status.value for o in patching.report()})",
            VLLM_ASCEND_COMPAT_CPU="1",
        )
        assert f"'{patch_id}': 'out-of-range'" in output
        return
    kv_blocks = {"KV_CACHE_BLOCK_SIZE": 16, "BLOCKS_PER_KV_BLOCK": 1} if "kv" in patch_id else {}
    scripts = [
        REPRO_SLOT_MAPPING.format(patched=patched).replace("KV_BLOCKS", repr(kv_blocks))
        for patched in (False, True)
    ]
    unpatched = check_python(scripts[0], VLLM_ASCEND_COMPAT_CPU="1")
    patched = check_python(scripts[1], VLLM_ASCEND_COMPAT_CPU="1")
    assert "NO KERNEL" in unpatched  # without Triton the runner cannot compute slots
    # request 0: block 7 rows 0, 1, then block 2 row 1; request 1: block 5 rows 4, 5; padding
    assert "SLOTS [112, 113, 33, 84, 85, -1, -1, -1]" in patched


# --- stop strings: the real V1 output processor and detokenizer, fed engine-core outputs ---

REPRO_STOP_STRINGS = """
import inspect, json
import numpy as np
from transformers import AutoTokenizer
from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest
from vllm.v1.outputs import LogprobsLists
import vllm.v1.engine.output_processor as op
from vllm_ascend_compat import patching, plugin
if {patched}:
    plugin.general_plugin()
MODEL = {model!r}
tokenizer = AutoTokenizer.from_pretrained(MODEL)
ids = lambda text: tokenizer.encode(text, add_special_tokens=False)
# one logprobs row per token from 0.12.0; before, one row per step whatever the tokens
ROWS_PER_TOKEN = hasattr(LogprobsLists, "slice_request")
if hasattr(op, "TokenizerGroup"):  # up to 0.10 the processor takes a tokenizer group
    processor = op.OutputProcessor(
        op.TokenizerGroup(MODEL, enable_lora=False, max_num_seqs=1, max_input_length=None),
        log_stats=False,
    )
else:
    processor = op.OutputProcessor(tokenizer, log_stats=False)
fields = EngineCoreRequest.__struct_fields__
required = fields[: len(fields) - len(EngineCoreRequest.__struct_defaults__)]

def run(name, prompt, steps, delta=False, **params):
    logprobs = 0 if ROWS_PER_TOKEN else None
    kind = RequestOutputKind.DELTA if delta else RequestOutputKind.CUMULATIVE
    sp = SamplingParams(max_tokens=64, logprobs=logprobs, output_kind=kind, **params)
    values = dict.fromkeys(required)
    values.update(request_id=name, prompt_token_ids=ids(prompt), sampling_params=sp,
                  arrival_time=0.0)
    if "eos_token_id" in fields:
        values["eos_token_id"] = tokenizer.eos_token_id
    if "external_req_id" in fields:  # set by the input processor from 0.27
        values["external_req_id"] = name
    processor.add_request(EngineCoreRequest(**values), None)
    tokens, text, logprob_rows, last = [], "", 0, None
    position = 0
    for step in steps:
        new_logprobs = None
        if ROWS_PER_TOKEN:  # distinct logprobs, so the kept rows show in the sum
            rows = [-(position + i + 1) / 8 for i in range(len(step))]
            new_logprobs = LogprobsLists(
                np.array([[t] for t in step]), np.array([[r] for r in rows], np.float32),
                np.zeros(len(step), np.int64))
        position += len(step)
        out = EngineCoreOutput(request_id=name, new_token_ids=list(step),
                               new_logprobs=new_logprobs)
        for request_output in processor.process_outputs([out]).request_outputs:
            completion = request_output.outputs[0]
            if delta:
                tokens += completion.token_ids
                text += completion.text
                logprob_rows += len(completion.logprobs or ())
            else:
                tokens, text = list(completion.token_ids), completion.text
                logprob_rows = len(completion.logprobs or ())
            last = completion
        if last is not None and last.finish_reason is not None:
            break
    print("CASE " + json.dumps({{
        "name": name, "tokens": tokens, "text": text, "finish_reason": last.finish_reason,
        "stop_reason": last.stop_reason, "logprob_rows": logprob_rows,
        "cumulative_logprob": last.cumulative_logprob,
    }}))

# 1. two stop strings inside one token's text: "um" completes before "ps"
run("earliest", "The quick brown fox", [ids(" jumps")], stop=["ps", "um"])
# 2. one step appends six tokens (speculative decoding); "lazy" completes at the 4th
lazy = ids(" jumps over the lazy dog.")
run("after-stop", "The quick brown fox", [lazy], stop=["lazy"])
run("after-stop-delta", "The quick brown fox", [lazy], delta=True, stop=["lazy"])
# 3. "fox" is the 4th token, within min_tokens=5; the next "fox" is the 15th
fox = ids("The quick brown fox jumps over the lazy dog. The quick brown fox")
run("min-tokens", "Once upon a time", [[t] for t in fox], min_tokens=5, stop=["fox"])
run("min-tokens-one-step", "Once upon a time", [fox], min_tokens=5, stop=["fox"])
print("REPORT " + json.dumps({{o.patch_id: o.status.value for o in patching.report()}}))
"""

STOP_STRING_PATCHES = (
    "earliest-stop-string-v0-checker",
    "earliest-stop-string",
    "stop-string-drops-later-tokens",
    "stop-string-drops-later-logprobs",
    "stop-strings-after-min-tokens",
)


def _cases(output: str) -> dict[str, dict]:
    import json

    cases = {}
    for line in output.splitlines():
        if line.startswith("CASE "):
            case = json.loads(line[len("CASE ") :])
            cases[case.pop("name")] = case
        elif line.startswith("REPORT "):
            cases["report"] = json.loads(line[len("REPORT ") :])
    return cases


@pytest.fixture(scope="module")
def stop_string_runs(vllm_release: str, tiny_model) -> dict[str, dict[str, dict]]:
    """The stop-string cases through the real output processor, unpatched and patched."""
    return {
        kind: _cases(
            check_python(
                REPRO_STOP_STRINGS.format(patched=kind == "patched", model=str(tiny_model)),
                VLLM_ASCEND_COMPAT_CPU="1",
            )
        )
        for kind in ("unpatched", "patched")
    }


def test_stop_string_patches_apply_exactly_in_range(
    stop_string_runs: dict, vllm_release: str
) -> None:
    report = stop_string_runs["patched"]["report"]
    for patch_id in STOP_STRING_PATCHES:
        expected = "applied" if _applies(patch_id, vllm_release) else "out-of-range"
        assert report[patch_id] == expected, (patch_id, report[patch_id])


def test_earliest_stop_string_reproducer(stop_string_runs: dict, vllm_release: str) -> None:
    in_range = [p for p in STOP_STRING_PATCHES[:2] if _applies(p, vllm_release)]
    fixed = stop_string_runs["patched"]["earliest"]
    assert (fixed["stop_reason"], fixed["text"]) == ("um", " j")  # "um" ends first
    unpatched = stop_string_runs["unpatched"]["earliest"]
    if in_range:
        assert (unpatched["stop_reason"], unpatched["text"]) == ("ps", " jum")  # the bug
    else:
        assert Version(vllm_release) >= Version("0.27.0")
        assert unpatched == fixed  # fixed upstream on this line


def test_stop_string_drops_later_tokens_reproducer(
    stop_string_runs: dict, vllm_release: str
) -> None:
    rows_per_token = Version(vllm_release) >= Version("0.12.0")
    for name in ("after-stop", "after-stop-delta"):
        fixed = stop_string_runs["patched"][name]
        assert fixed["text"] == " jumps over the "
        assert (fixed["finish_reason"], fixed["stop_reason"]) == ("stop", "lazy")
        assert len(fixed["tokens"]) == 4, fixed  # up to " lazy", which completes the stop
        if rows_per_token:
            assert fixed["logprob_rows"] == 4, fixed
            assert fixed["cumulative_logprob"] == pytest.approx(-(1 + 2 + 3 + 4) / 8)
        unpatched = stop_string_runs["unpatched"][name]
        if _applies("stop-string-drops-later-tokens", vllm_release):
            assert unpatched["text"] == fixed["text"]
            assert len(unpatched["tokens"]) == 6, unpatched  # the bug: " dog", "." kept
            if rows_per_token:
                assert _applies("stop-string-drops-later-logprobs", vllm_release)
                assert unpatched["logprob_rows"] == 6, unpatched
        else:
            assert unpatched == fixed  # fixed upstream on this line


def test_stop_strings_after_min_tokens_reproducer(
    stop_string_runs: dict, vllm_release: str
) -> None:
    held_text = "The quick brown fox jumps over the lazy dog. The quick brown "
    for name in ("min-tokens", "min-tokens-one-step"):
        fixed = stop_string_runs["patched"][name]
        assert (fixed["text"], fixed["stop_reason"]) == (held_text, "fox"), fixed
        assert len(fixed["tokens"]) == 15, fixed
        unpatched = stop_string_runs["unpatched"][name]
        if _applies("stop-strings-after-min-tokens", vllm_release):
            assert unpatched["text"] == "The quick brown ", unpatched  # the bug: 4th token
        else:
            assert unpatched["text"] == held_text  # fixed upstream on this line


# --- min_tokens must not skip the length caps (0.11.1 up to 0.29) ---

REPRO_MIN_TOKENS_AT_MAX_MODEL_LEN = """
from vllm import SamplingParams
import vllm.v1.core.sched.scheduler as scheduler
from vllm_ascend_compat import patching, plugin
if {patched}:
    plugin.general_plugin()
STOP, EOS = 7, 99
params = SamplingParams(max_tokens=50, min_tokens=40, stop_token_ids=[STOP])
params.update_from_generation_config({{}}, EOS)
# 3 prompt + 2 output tokens reach max_model_len=5 while min_tokens is pending;
# called through the scheduler module, which imported check_stop by name
request = make_request(params, EOS)
request.append_output_token_ids([5, 6])
print("AT_LEN", scheduler.check_stop(request, max_model_len=5), request.status.name)
# a stop token before min_tokens (possible with speculative decoding)
request = make_request(params, EOS)
request.append_output_token_ids([5, STOP])
print("EARLY_STOP", scheduler.check_stop(request, max_model_len=100), request.status.name)
print("REPORT", {{o.patch_id: o.status.value for o in patching.report()}})
"""


def test_min_tokens_keeps_length_caps_reproducer(vllm_release: str) -> None:
    ids = (
        "min-tokens-keeps-length-caps-pooling",
        "min-tokens-keeps-length-caps-request-eos",
        "min-tokens-keeps-length-caps",
    )
    script = REPRO_MIN_TOKENS_AT_MAX_MODEL_LEN
    patched = check_python(MAKE_REQUEST + script.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1")
    assert "AT_LEN True FINISHED_LENGTH_CAPPED" in patched
    for patch_id in ids:
        status = "applied" if _applies(patch_id, vllm_release) else "out-of-range"
        assert f"'{patch_id}': '{status}'" in patched
    if not any(_applies(patch_id, vllm_release) for patch_id in ids):
        return  # no min_tokens gate in check_stop (before 0.11.1), or fixed upstream (0.29)
    unpatched = check_python(
        MAKE_REQUEST + script.format(patched=False), VLLM_ASCEND_COMPAT_CPU="1"
    )
    assert "AT_LEN False" in unpatched  # the bug: never finishes at max_model_len
    # the release's own min_tokens gate on stop tokens is kept
    assert "EARLY_STOP False" in unpatched and "EARLY_STOP False" in patched


MIN_TOKENS_E2E = """
import json
from vllm import LLM, SamplingParams
from e2e import LLM_ARGS, LONG, MAX_MODEL_LEN
llm = LLM(model={model!r}, **LLM_ARGS)
params = SamplingParams(temperature=0.0, max_tokens=MAX_MODEL_LEN, min_tokens=MAX_MODEL_LEN - 8)
(out,) = llm.generate(LONG, params, use_tqdm=False)
print("RESULT " + json.dumps({{
    "prompt_len": len(out.prompt_token_ids), "tokens": len(out.outputs[0].token_ids),
    "finish_reason": out.outputs[0].finish_reason, "max_model_len": MAX_MODEL_LEN,
}}))
"""


@pytest.mark.e2e
def test_min_tokens_at_max_model_len_finishes_end_to_end(vllm_release: str, tiny_model) -> None:
    """Through LLM: min_tokens still pending at max_model_len ends with 'length', no hang."""
    import json
    import subprocess

    try:
        output = check_python(
            MIN_TOKENS_E2E.format(model=str(tiny_model)),
            timeout=420,
            VLLM_ASCEND_COMPAT_CPU="1",
            HF_HUB_OFFLINE="1",
            VLLM_ENABLE_V1_MULTIPROCESSING="0",  # the scheduler runs in this process
        )
    except subprocess.TimeoutExpired:
        pytest.fail("generation never finished: the request at max_model_len hangs")
    (line,) = [x for x in output.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    assert result["finish_reason"] == "length", result
    assert result["prompt_len"] + result["tokens"] == result["max_model_len"], result
