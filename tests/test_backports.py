"""The real patches against the real installed vLLM: apply, unapply, and each fix's reproducer."""

from __future__ import annotations

import pytest
from conftest import check_python
from packaging.version import Version
from vllm_ascend_compat.patches import ALL

pytestmark = pytest.mark.usefixtures("vllm_release")

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
    owner, name, raw, _ = patching.resolve_target(p)
    originals[p.id] = (owner, name, raw)
import vllm.v1.core.sched.scheduler  # holds check_stop by name
for phase in patching.Phase:
    plugin.apply_phase(phase)
for p in mine:
    owner, name, raw = originals[p.id]
    assert vars(owner)[name] is not raw, p.id
    assert patching.is_applied(p.id)
patching.unpatch()
for p in mine:
    owner, name, raw = originals[p.id]
    assert vars(owner)[name] is raw, p.id
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


REPRO_STOP_AT_MAX_TOKENS = """
from vllm import SamplingParams
from vllm.v1.request import Request, RequestStatus
import vllm.v1.core.sched.scheduler as scheduler
from vllm_ascend_compat import plugin
if {patched}:
    plugin.general_plugin()
import inspect
STOP = 7
for stop_kind in ("eos", "stop_token"):
    stop_ids = [STOP] if stop_kind == "stop_token" else None
    params = SamplingParams(max_tokens=2, stop_token_ids=stop_ids)
    eos = STOP if stop_kind == "eos" else 99
    params.update_from_generation_config({{}}, eos)  # where the EOS lives from 0.14
    old_style = "eos_token_id" in inspect.signature(Request.__init__).parameters  # up to 0.13
    extra = {{"eos_token_id": eos}} if old_style else {{}}
    request = Request("r", [1, 2, 3], params, None, **extra)
    request.append_output_token_ids([5, STOP])  # the stop comes exactly at max_tokens
    # call through the scheduler module, which imported check_stop by name
    assert scheduler.check_stop(request, max_model_len=100)
    print(stop_kind, request.status.name, request.stop_reason)
"""


def test_stop_token_at_max_tokens_reproducer(vllm_release: str) -> None:
    if not _applies("stop-token-before-length-cap", vllm_release):
        output = check_python(
            REPRO_STOP_AT_MAX_TOKENS.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1"
        )
        assert "eos FINISHED_STOPPED None" in output  # fixed upstream on this line
        assert "stop_token FINISHED_STOPPED 7" in output
        return
    unpatched = check_python(
        REPRO_STOP_AT_MAX_TOKENS.format(patched=False), VLLM_ASCEND_COMPAT_CPU="1"
    )
    patched = check_python(
        REPRO_STOP_AT_MAX_TOKENS.format(patched=True), VLLM_ASCEND_COMPAT_CPU="1"
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
