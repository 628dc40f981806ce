"""ngram speculative decoding through the plugin: the torch rejection-sampler kernels, then e2e.

The kernels are checked against loop transcriptions of vLLM's Triton programs (one
request per program, as the kernels are written), directly and through each line's
own ``rejection_sample``; end to end, greedy generation with ngram drafts must give
the tokens of the plain run (``tp1``) and of HF transformers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TESTS_DIR, check_python, clean_env
from e2e import FIRST, LLM_ARGS, LONG, MAX_TOKENS, SECOND, greedy_tokens

from vllm_ascend_compat.patches.spec_decode import kernels

SPECULATIVE_CONFIG = {
    "method": "ngram",
    "num_speculative_tokens": 3,
    "prompt_lookup_max": 4,
    "prompt_lookup_min": 1,  # the random tiny model rarely repeats longer n-grams
}


# --- references: the Triton programs, one request at a time ---------------------------------


def _span(cu: list[int], r: int) -> tuple[int, int]:
    start = 0 if r == 0 else cu[r - 1]
    return start, cu[r] - start


def ref_greedy(out, cu, draft, argmax, bonus, is_greedy, uniform=None, rates=None):
    for r in range(len(cu)):
        if is_greedy is not None and not is_greedy[r]:
            continue
        start, n = _span(cu, r)
        rejected = False
        for pos in range(n):
            if rejected:
                continue
            d, t = draft[start + pos], argmax[start + pos]
            if rates is None:
                token, rejected = t, d != t
            else:
                accepted = uniform[start + pos] < rates[pos] and d >= 0
                token, rejected = (d if accepted else t), not accepted
            out[r][pos] = token
        if not rejected:
            out[r][n] = bonus[r]
    return out


def ref_random(out, cu, draft, draft_probs, target_probs, bonus, recovered, uniform, is_greedy):
    for r in range(len(cu)):
        if is_greedy[r]:
            continue
        start, n = _span(cu, r)
        rejected = False
        for pos in range(n):
            if rejected:
                continue
            i, d = start + pos, draft[start + pos]
            draft_prob = 1.0 if draft_probs is None else float(draft_probs[i][d])
            target_prob = float(target_probs[i][d])
            if d >= 0 and draft_prob > 0 and target_prob / draft_prob >= uniform[i]:
                out[r][pos] = d
            else:
                rejected = True
                out[r][pos] = recovered[i]
        if not rejected:
            out[r][n] = bonus[r]
    return out


def ref_recovered(cu, draft, draft_probs, target_probs, q, inverted=False):
    out = []
    for r in range(len(cu)):
        start, n = _span(cu, r)
        for pos in range(n):
            i = start + pos
            if draft_probs is None:
                prob = target_probs[i].clone()
                prob[draft[i]] = 0
            else:
                prob = (target_probs[i] - draft_probs[i]).clamp(min=0)
            scores = (prob * q[r] if inverted else prob / q[r]).tolist()
            out.append(scores.index(max(scores)))  # the first maximum, as tl.argmax
    return out


# --- unit: kernels.py against the references ------------------------------------------------

BATCH, SPEC, VOCAB = 6, 4, 13


def _batch(seed: int, padded: bool = False) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, SPEC + 1, (BATCH,), generator=g)
    counts[0] = SPEC  # one request with every draft, one without
    counts[1] = 0
    cu = torch.cumsum(counts, 0).to(torch.int32)
    n = int(cu[-1])
    target_probs = torch.softmax(torch.randn(n, VOCAB, generator=g) * 3, dim=-1)
    argmax = target_probs.argmax(-1)
    other = torch.randint(0, VOCAB, (n,), generator=g)
    hit = torch.rand(n, generator=g) < 0.7  # most drafts match, so prefixes get accepted
    draft = torch.where(hit, argmax, other).to(torch.int32)
    if padded:
        draft[torch.rand(n, generator=g) < 0.2] = -1
    return {
        "cu": cu,
        "draft": draft,
        "argmax": argmax,
        "target_probs": target_probs,
        "draft_probs": torch.softmax(torch.randn(n, VOCAB, generator=g), dim=-1),
        "bonus": torch.arange(100, 100 + BATCH).reshape(BATCH, 1),
        "recovered": torch.randint(0, VOCAB, (n,), generator=g).to(torch.int32),
        "uniform": torch.rand(n, generator=g, dtype=torch.float64),
        "is_greedy": torch.rand(BATCH, generator=g) < 0.5,
        "rates": torch.tensor([0.9, 0.6, 0.3, 0.1]),
        "q": torch.empty(BATCH, VOCAB).exponential_(generator=g),
    }


def _empty_output() -> torch.Tensor:
    return torch.full((BATCH, SPEC + 1), -1, dtype=torch.int32)


@pytest.mark.release_independent
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("all_greedy", [True, False])
def test_greedy_kernel_matches_the_triton_program(seed: int, all_greedy: bool) -> None:
    b = _batch(seed)
    is_greedy = None if all_greedy else b["is_greedy"]
    out = _empty_output()
    kernels.rejection_greedy_sample(
        BATCH, out, b["cu"], b["draft"], b["argmax"], b["bonus"], is_greedy, SPEC
    )
    expected = ref_greedy(
        _empty_output().tolist(), b["cu"].tolist(), b["draft"].tolist(), b["argmax"].tolist(),
        b["bonus"].flatten().tolist(), None if is_greedy is None else is_greedy.tolist(),
    )  # fmt: skip
    assert out.tolist() == expected


@pytest.mark.release_independent
@pytest.mark.parametrize("seed", range(8))
def test_greedy_kernel_synthetic_mode_matches_the_triton_program(seed: int) -> None:
    b = _batch(seed, padded=True)
    out = _empty_output()
    kernels.rejection_greedy_sample(
        BATCH, out, b["cu"], b["draft"], b["argmax"], b["bonus"], b["is_greedy"], SPEC,
        b["uniform"], b["rates"],
    )  # fmt: skip
    expected = ref_greedy(
        _empty_output().tolist(), b["cu"].tolist(), b["draft"].tolist(), b["argmax"].tolist(),
        b["bonus"].flatten().tolist(), b["is_greedy"].tolist(), b["uniform"].tolist(),
        b["rates"].tolist(),
    )  # fmt: skip
    assert out.tolist() == expected


@pytest.mark.release_independent
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("with_draft_probs", [True, False])
def test_random_kernel_matches_the_triton_program(seed: int, with_draft_probs: bool) -> None:
    b = _batch(seed, padded=seed % 2 == 1)
    draft_probs = b["draft_probs"] if with_draft_probs else None
    out = _empty_output()
    kernels.rejection_random_sample(
        BATCH, out, b["cu"], b["draft"], draft_probs, b["target_probs"], b["bonus"],
        b["recovered"], b["uniform"], b["is_greedy"], SPEC,
    )  # fmt: skip
    expected = ref_random(
        _empty_output().tolist(), b["cu"].tolist(), b["draft"].tolist(), draft_probs,
        b["target_probs"], b["bonus"].flatten().tolist(), b["recovered"].tolist(),
        b["uniform"].tolist(), b["is_greedy"].tolist(),
    )  # fmt: skip
    assert out.tolist() == expected
    accepted = (out >= 0) & (out < VOCAB)
    assert accepted.any(), "the inputs should accept some drafts"


@pytest.mark.release_independent
def test_random_kernel_outcomes_forced_by_the_probabilities() -> None:
    """A draft with target probability 1 is accepted for any u; with 0 it is rejected."""
    cu = torch.tensor([2, 2, 5], dtype=torch.int32)
    draft = torch.tensor([3, 4, 1, 2, 0], dtype=torch.int32)
    target = torch.zeros(5, VOCAB)
    target[[0, 1, 2, 3, 4], [3, 4, 1, 5, 0]] = 1.0  # request 2 rejects its second draft
    out = torch.full((3, SPEC + 1), -1, dtype=torch.int32)
    kernels.rejection_random_sample(
        3, out, cu, draft, None, target, torch.tensor([[7], [8], [9]]),
        torch.tensor([10, 11, 12, 5, 14], dtype=torch.int32),
        torch.tensor([0.999, 0.5, 0.001, 0.5, 0.5], dtype=torch.float64),
        torch.tensor([False, False, False]), SPEC,
    )  # fmt: skip
    assert out.tolist() == [[3, 4, 7, -1, -1], [8, -1, -1, -1, -1], [1, 5, -1, -1, -1]]


@pytest.mark.release_independent
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("with_draft_probs", [True, False])
@pytest.mark.parametrize("inverted", [True, False])
def test_recovered_tokens_match_the_triton_program(
    seed: int, with_draft_probs: bool, inverted: bool
) -> None:
    b = _batch(seed)
    draft_probs = b["draft_probs"] if with_draft_probs else None
    out = torch.full_like(b["draft"], -1)
    q = b["q"].reciprocal() if inverted else b["q"]
    kernels.sample_recovered_tokens(
        BATCH, out, b["cu"], b["draft"], draft_probs, b["target_probs"], q, inverted=inverted
    )
    expected = ref_recovered(
        b["cu"].tolist(), b["draft"].tolist(), draft_probs, b["target_probs"], q, inverted
    )
    assert out.tolist() == expected


@pytest.mark.release_independent
def test_recovered_token_never_the_draft_without_draft_probs() -> None:
    """The draft token's own probability is left out (ngram drafts have no probabilities)."""
    target = torch.zeros(1, VOCAB)
    target[0, 4] = 1.0
    out = torch.empty(1, dtype=torch.int32)
    q = torch.ones(1, VOCAB)
    kernels.sample_recovered_tokens(
        1, out, torch.tensor([1]), torch.tensor([4]), None, target, q, inverted=False
    )
    assert out.item() != 4


@pytest.mark.release_independent
def test_expand_matches_the_triton_program() -> None:
    values = torch.tensor([-1.0, 0.5, -1.0, 2.0])
    cu = torch.tensor([3, 3, 5, 9], dtype=torch.int32)
    out = torch.full((10,), 7.0)
    kernels.expand(4, out, values, cu, -1, 1, 128)
    assert out.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 7.0]
    capped = torch.zeros(9)
    kernels.expand(4, capped, values, cu, 0, 0, 2)  # MAX_NUM_TOKENS caps each request
    assert capped.tolist() == [-1.0, -1.0, 0.0, -1.0, -1.0, 2.0, 2.0, 0.0, 0.0]


# --- through each line's own rejection_sample, patches applied -------------------------------

_THROUGH_VLLM = """
import inspect, sys
from types import SimpleNamespace
import torch
from vllm_ascend_compat import patching, plugin
plugin.apply_phase(patching.Phase.EVERY_PROCESS)
import vllm.v1.sample.rejection_sampler as rs

status = {o.patch_id: o.status.value for o in patching.report()}
ours = {k: v for k, v in status.items() if "rejection" in k or "recovered" in k}
assert "applied" in ours.values(), ours
takes_logits = "target_logits" in inspect.signature(rs.rejection_sample).parameters
g = torch.Generator().manual_seed(0)
cu = torch.tensor([3, 3, 5, 9], dtype=torch.int32)
counts = [3, 0, 2, 4]
vocab, spec = 16, 4
chosen = torch.randint(0, vocab, (9,), generator=g)
draft = torch.where(torch.rand(9, generator=g) < 0.6, chosen, (chosen + 1) % vocab)
bonus = torch.tensor([[12], [13], [14], [15]])
G = rs.GREEDY_TEMPERATURE
results = {"GREEDY_TEMPERATURE": G}
for case, greedy in {
    "mixed": [True, True, False, False], "all_greedy": [True] * 4, "all_random": [False] * 4,
}.items():
    logits = torch.randn(9, vocab, generator=g)
    # random requests: one-hot targets force the outcome (accept iff draft == chosen)
    for r, is_greedy in enumerate(greedy):
        if not is_greedy:
            rows = torch.arange(int(cu[r]) - counts[r], int(cu[r]))
            logits[rows] = float("-inf")
            logits[rows, chosen[rows]] = 0.0
    target = logits if takes_logits else logits.softmax(-1)
    meta = SimpleNamespace(
        all_greedy=all(greedy), all_random=not any(greedy), generators={},
        temperature=torch.tensor([G if x else 1.0 for x in greedy]), top_k=None, top_p=None,
    )
    out = rs.rejection_sample(
        draft.to(torch.int32).contiguous(), counts, spec, cu, None, target.contiguous(),
        bonus, meta,
    )
    results[case] = {"greedy": greedy, "logits": logits.tolist(), "out": out.tolist()}
temps = torch.tensor([G, 0.5, G, 2.0])
results["expand"] = rs.expand_batch_to_tokens(temps, cu, 9, replace_from=G, replace_to=1).tolist()
results["draft"], results["chosen"] = draft.tolist(), chosen.tolist()
print("RESULT " + __import__("json").dumps(results))
"""


@pytest.mark.sweep
@pytest.mark.feature("spec-decoding")
def test_line_rejection_sample_runs_on_the_torch_kernels(vllm_release: str) -> None:
    """vLLM's own ``rejection_sample`` of the installed line, on the patched kernels."""
    output = check_python(_THROUGH_VLLM, VLLM_ASCEND_COMPAT_CPU="1")
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[len("RESULT ") :])
    cu, draft, bonus = [3, 3, 5, 9], res["draft"], [12, 13, 14, 15]
    for case in ("mixed", "all_greedy", "all_random"):
        greedy = res[case]["greedy"]
        argmax = torch.tensor(res[case]["logits"]).argmax(-1).tolist()
        expected = [[-1] * (SPEC + 1) for _ in range(4)]
        if any(greedy):
            ref_greedy(expected, cu, draft, argmax, bonus, greedy)
        if not all(greedy):
            probs = torch.tensor(res[case]["logits"]).softmax(-1)
            uniform = [0.5] * 9  # any u in (0, 1): the one-hot targets force the outcome
            ref_random(expected, cu, draft, None, probs, bonus, argmax, uniform, greedy)
        assert res[case]["out"] == expected, case
        flat = [t for row in expected for t in row]
        assert any(t in bonus for t in flat) and -1 in flat, "accept all and reject some"
    g = res["GREEDY_TEMPERATURE"]
    assert res["expand"] == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], g


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, vllm_release: str) -> dict:
    """The tp1 batches, generated greedily with ngram drafts (one engine start)."""
    tmp = tmp_path_factory.mktemp("spec-decode")
    batches = [
        {"prompts": FIRST, "ignore_eos": False},
        {"prompts": SECOND, "ignore_eos": False},
        {"prompts": LONG, "ignore_eos": True},
    ]
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({
        "model": str(tiny_model), "batches": batches, "max_tokens": MAX_TOKENS,
        "llm": {**LLM_ARGS, "speculative_config": SPECULATIVE_CONFIG},
    }))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(TESTS_DIR / "run_spec_decode.py"), str(spec)],
        capture_output=True, text=True, timeout=900, cwd=tmp,
        # the engine core in its own process: in process, 0.11.2's metrics showed no drafts
        env=clean_env(VLLM_ASCEND_COMPAT_CPU="1", HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.e2e
@pytest.mark.sweep
@pytest.mark.feature("spec-decoding")
def test_ngram_spec_decode_equals_plain_greedy(
    spec_run: dict[str, Any], tp1: dict[str, Any], oracle: dict[str, list[int]], vllm_release: str
) -> None:
    prompts = FIRST + SECOND + LONG
    got = [tokens for batch in spec_run["batches"] for tokens in batch]
    plain = greedy_tokens(tp1)
    metrics = spec_run["metrics"]
    drafted = metrics.get("vllm:spec_decode_num_draft_tokens", 0)
    accepted = metrics.get("vllm:spec_decode_num_accepted_tokens", 0)
    print(
        f"vLLM {vllm_release}: ngram drafts {metrics.get('vllm:spec_decode_num_drafts')}, "
        f"draft tokens {drafted}, accepted {accepted}, "
        f"acceptance {accepted / max(drafted, 1):.1%}, "
        f"per position {metrics.get('vllm:spec_decode_num_accepted_tokens_per_pos')}"
    )
    for g, p, prompt in zip(got, plain, prompts, strict=True):
        assert g == p, f"prompt {prompt[:40]!r}: spec {g[:12]} vs plain {p[:12]}"
        assert g == oracle[prompt], f"prompt {prompt[:40]!r}: spec {g[:12]} vs HF"
    assert drafted > 0, f"ngram proposed no drafts: {metrics}"
    assert accepted > 0, f"no draft was accepted: {metrics}"
