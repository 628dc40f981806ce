"""The EMULATED npu device's torch_npu / ATB operators (emulator/torch_npu/ops.py).

These check the emulator: that each op computes what it is documented to compute (against
an independent float64 reference on the CPU), refuses every call that breaks a precondition
the real op documents, and is defined with the real schema from the torch_npu wheel; and
that the plugin's own NPU kernels (csrc/npu_kernels.cpp) reach them. They say nothing about
a real Ascend NPU's numerics. Each interpreter is fresh.

Tolerances, result vs float64 reference (inputs rounded to the dtype first, so only the
op's own rounding counts): float32 rtol = atol = 1e-5; float16 rtol = atol = 2e-3 (two ulp
at 1.0); bfloat16 rtol = atol = 1.6e-2 (two ulp at 1.0). The ops accumulate in float32 and
round once, so one ulp of the result plus float32 noise is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT, check_python

pytestmark = pytest.mark.release_independent

EMULATOR = REPO_ROOT / "emulator"
BUILD_TIMEOUT = 900  # a cold build of the extension takes about 20 s alone
WHEEL_VARIABLE = "VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL"
SCHEMAS = tomllib.loads((EMULATOR / "torch_npu" / "schemas.toml").read_text())["op"]
MANIFEST = tomllib.loads((REPO_ROOT / "tests" / "torch_npu_calls.toml").read_text())["call"]

# Puts the emulator on sys.path directly and imports it (as tests/test_emulator.py does),
# plus the float64 comparison every numeric test uses.
PRELUDE = f"""
import json, math, sys
sys.path.insert(0, {str(EMULATOR)!r})
import torch
import torch_npu
TOL = {{torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}}

def close(got, want, dtype, what):
    assert got.device.type == "npu", (what, got.device)
    assert got.dtype == dtype, (what, got.dtype, dtype)
    got = got.cpu().double()
    tol = TOL[dtype]
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert torch.allclose(got, want, rtol=tol, atol=tol), f"{{what}} {{dtype}}: max error {{err}}"

def npu(t):
    return t.to("npu")
"""


def _env() -> dict[str, str]:
    """The build cache the caller chose; C++ builds one job at a time unless told otherwise."""
    env = {"MAX_JOBS": os.environ.get("MAX_JOBS", "1")}
    if "VLLM_ASCEND_COMPAT_CACHE" in os.environ:
        env["VLLM_ASCEND_COMPAT_CACHE"] = os.environ["VLLM_ASCEND_COMPAT_CACHE"]
    return env


def run(code: str) -> str:
    return check_python(PRELUDE + textwrap.dedent(code), timeout=BUILD_TIMEOUT, **_env())


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    """Build the extension once, before the tests that load it."""
    run("assert torch.npu.is_available()")


# --- definitions: namespace, schema, exposure ---


def test_ops_are_defined_with_the_schemas_of_schemas_toml():
    run(f"""
        schemas = {json.dumps(SCHEMAS)}
        for op, entry in schemas.items():
            packet = getattr(getattr(torch.ops, entry["namespace"]), op)
            defined = packet.default._schema
            want = torch._C.parse_schema(entry["namespace"] + "::" + entry["schema"])
            assert defined == want, (op, str(defined), str(want))
            # the Python name the plugin uses: torch_npu.<op>, as torch_npu exposes them
            assert getattr(torch_npu, op) is packet, op
            # a kernel for the npu device only, as torch_npu registers (no CPU kernel)
            name = entry["namespace"] + "::" + op
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "PrivateUse1"), op
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), op
        assert "emulat" in torch_npu.ops.__doc__.lower()
    """)


def test_each_plugin_call_binds_like_call_npu():
    """csrc/npu_kernels.cpp's call_npu passes arguments by name and the schema defaults for
    the rest; every argument without a default must be among the names it passes."""
    calls = [c for c in MANIFEST if c["where"].endswith(".cpp")]
    run(f"""
        calls = {json.dumps(calls)}
        schemas = {json.dumps(SCHEMAS)}
        for call in calls:
            entry = schemas[call["op"]]
            schema = getattr(getattr(torch.ops, entry["namespace"]), call["op"]).default._schema
            names = {{a.name for a in schema.arguments}}
            assert set(call["names"]) <= names, (call["op"], set(call["names"]) - names)
            required = {{a.name for a in schema.arguments if not a.has_default_value()}}
            missing = required - set(call["names"])
            assert not missing, (call["op"], missing)
    """)


@pytest.mark.skipif(
    not os.environ.get(WHEEL_VARIABLE),
    reason=f"needs the torch_npu wheel: set {WHEEL_VARIABLE} (nox downloads it)",
)
def test_schemas_toml_matches_the_wheel():
    if not shutil.which("objdump"):
        pytest.skip("needs objdump (binutils) to rebuild the ATB schema strings from the wheel")
    wheel = Path(os.environ[WHEEL_VARIABLE])
    assert wheel.exists(), wheel
    sys.path.insert(0, str(EMULATOR / "torch_npu"))
    try:
        import extract_schemas
    finally:
        sys.path.pop(0)
    extracted = extract_schemas.extract(wheel)
    assert extracted == SCHEMAS, {
        op: (SCHEMAS.get(op), extracted.get(op))
        for op in set(SCHEMAS) | set(extracted)
        if SCHEMAS.get(op) != extracted.get(op)
    }
    # the ATB strings are the exact m.def strings only when objdump could rebuild them
    for op, entry in extracted.items():
        if entry["namespace"] == "atb":
            assert "rebuilt from objdump" in entry["source"], (op, entry["source"])


# --- numerics against float64 references ---


def test_rms_norm_and_add_rms_norm_match_float64():
    run("""
        torch.manual_seed(0)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            cases = (((7, 64), (64,), 1.0), ((3, 5, 32), (32,), 1.0), ((2, 4, 16), (4, 16), 1.0),
                     ((4, 64), (64,), 1e-3))  # small x: epsilon dominates the mean square
            for shape, gshape, size in cases:
                x = (torch.randn(shape) * size).to(dtype)
                r = torch.randn(shape).to(dtype)
                g = torch.randn(gshape).to(dtype)
                dims = tuple(range(len(shape) - len(gshape), len(shape)))
                def ref(v):
                    v = v.double()
                    rstd = 1 / torch.sqrt(v.pow(2).mean(dim=dims, keepdim=True) + 1e-5)
                    return v * rstd * g.double(), rstd
                y, rstd = torch_npu.npu_rms_norm(npu(x), npu(g), 1e-5)
                want_y, want_rstd = ref(x)
                close(y, want_y, dtype, "rms_norm y")
                close(rstd, want_rstd, torch.float32, "rms_norm rstd")
                y, rstd, total = torch_npu.npu_add_rms_norm(npu(x), npu(r), npu(g), 1e-5)
                s = x.double() + r.double()
                want_y, want_rstd = ref(s)
                close(total, s, dtype, "add_rms_norm x")
                close(y, want_y, dtype, "add_rms_norm y")
                close(rstd, want_rstd, torch.float32, "add_rms_norm rstd")
        # the default epsilon of the schema is used when none is passed
        x = torch.randn(4, 8)
        y, _ = torch.ops.npu.npu_rms_norm(npu(x), npu(torch.ones(8)))
        want = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
        close(y, want, torch.float32, "default epsilon")
    """)


def test_swiglu_matches_float64():
    run("""
        torch.manual_seed(0)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for shape, dim in (((6, 64), -1), ((3, 8, 10), 1), ((16,), 0)):
                x = torch.randn(shape).to(dtype)
                a, b = x.double().chunk(2, dim=dim)
                want = a / (1 + torch.exp(-a)) * b
                close(torch_npu.npu_swiglu(npu(x), dim=dim), want, dtype, f"swiglu {shape}")
    """)


def test_weight_quant_batchmatmul_matches_float64():
    run("""
        torch.manual_seed(0)
        m, k, n = 5, 96, 24
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(m, k).to(dtype)
            w = torch.randint(-8, 8, (n, k), dtype=torch.int8)  # [out, in], as the plugin keeps it
            cases = {
                "per-channel": (torch.rand(n) * 0.1 + 0.01, None, 0),
                "per-tensor": (torch.tensor([0.05]), None, 0),
                "per-channel offset": (torch.rand(1, n) * 0.1, torch.randn(1, n), 0),
                "per-group": (torch.rand(3, n) * 0.1, None, 32),
            }
            for name, (scale, offset, group) in cases.items():
                scale = scale.to(dtype)
                offset = None if offset is None else offset.to(dtype)
                wd = w.t().double()  # [K, N]
                s = scale.double()
                o = None if offset is None else offset.double()
                if group:
                    s = s.repeat_interleave(group, dim=0)
                if o is not None:
                    wd = wd + o
                want = x.double() @ (wd * s)
                got = torch_npu.npu_weight_quant_batchmatmul(
                    npu(x), npu(w).t(), npu(scale),
                    antiquant_offset=None if offset is None else npu(offset),
                    antiquant_group_size=group)
                close(got, want, dtype, name)
            bias = torch.randn(n).to(torch.float32 if dtype == torch.bfloat16 else torch.float16)
            got = torch_npu.npu_weight_quant_batchmatmul(
                npu(x), npu(w).t(), npu(torch.full((n,), 0.02).to(dtype)), bias=npu(bias))
            close(got, x.double() @ (w.t().double() * 0.02) + bias.double(), dtype, "bias")
    """)


def test_quantize_and_dynamic_quant_match_float64():
    run("""
        torch.manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16):
            x = (torch.randn(6, 40) * 3).to(dtype)
            x[0, :3] = torch.tensor([1000.0, -1000.0, 0.0])  # saturation
            s, o = torch.rand(40).to(dtype) * 4 + 1, torch.randint(-5, 5, (40,)).to(dtype)
            got = torch_npu.npu_quantize(npu(x), npu(s), npu(o), torch.qint8, -1, False)
            want = (x.double() * s.double() + o.double()).round().clamp(-128, 127)
            assert got.dtype == torch.int8 and got.device.type == "npu", got
            assert (got.cpu().double() - want).abs().max() <= 1, "npu_quantize (div_mode off)"
            got = torch_npu.npu_quantize(npu(x), npu(s.float()), None, torch.qint8)
            want = (x.double() / s.double()).round().clamp(-128, 127)
            assert (got.cpu().double() - want).abs().max() <= 1, "npu_quantize (div_mode)"
            x[1] = 0
            y, scale = torch_npu.npu_dynamic_quant(npu(x))
            peak = x.double().abs().amax(dim=-1)
            assert scale.dtype == torch.float32 and scale.shape == (6,), scale
            assert torch.allclose(scale.cpu().double(), peak / 127, rtol=1e-6), "scale"
            assert y.dtype == torch.int8 and y[1].eq(0).all().item(), y
            want = (x.double() / (peak / 127).clamp(min=1e-30).unsqueeze(1)).round()
            assert (y.cpu().double() - want).abs().max() <= 1, "npu_dynamic_quant"
            assert y.cpu().abs().amax(dim=-1)[2:].eq(127).all(), "each row's peak maps to 127"
    """)


def test_quant_matmul_matches_int64():
    run("""
        torch.manual_seed(0)
        m, k, n = 5, 96, 24
        x1 = torch.randint(-128, 128, (m, k), dtype=torch.int8)
        w = torch.randint(-128, 128, (n, k), dtype=torch.int8)  # [out, in]; x2 is its .t()
        acc = x1.long() @ w.long().t()
        scale, pertoken = torch.rand(n) * 1e-3, torch.rand(m) + 0.5
        for dtype in (torch.float16, torch.bfloat16):
            qb = torch.randint(-5000, 5000, (n,), dtype=torch.int32)
            got = torch_npu.npu_quant_matmul(npu(x1), npu(w).t(), npu(scale), bias=npu(qb),
                                             output_dtype=dtype)
            close(got, (acc + qb.long()).double() * scale.double(), dtype, "int32 bias")
            bias = torch.randn(n).to(dtype)
            got = torch_npu.npu_quant_matmul(npu(x1), npu(w).t(), npu(scale),
                                             pertoken_scale=npu(pertoken), bias=npu(bias),
                                             output_dtype=dtype)
            want = acc.double() * scale.double() * pertoken.double()[:, None] + bias.double()
            close(got, want, dtype, "pertoken, float bias")
    """)


def test_rotary_embedding_matches_float64_in_place():
    run("""
        torch.manual_seed(0)
        def ref(x, pos, cache, head, neox):  # x [T, hidden] float64; element by element
            out = x.clone()
            half = head // 2
            for t in range(x.shape[0]):
                cos, sin = cache[pos[t], :half], cache[pos[t], half:]
                for h0 in range(0, x.shape[1], head):
                    for i in range(half):
                        a, b = (h0 + i, h0 + i + half) if neox else (h0 + 2 * i, h0 + 2 * i + 1)
                        out[t, a] = x[t, a] * cos[i] - x[t, b] * sin[i]
                        out[t, b] = x[t, b] * cos[i] + x[t, a] * sin[i]
            return out
        for dtype in (torch.float16, torch.bfloat16):
            for neox in (True, False):
                T, head = 5, 16
                q, k = torch.randn(T, 4 * head).to(dtype), torch.randn(T, 2 * head).to(dtype)
                cache = torch.randn(64, head).to(dtype)
                pos = torch.tensor([3, 0, 63, 7, 7])
                nq, nk = npu(q), npu(k)
                before = (nq.data_ptr(), nk.data_ptr())
                result = torch_npu._npu_rotary_embedding(npu(pos), nq, nk, head, npu(cache), neox)
                assert result is None and (nq.data_ptr(), nk.data_ptr()) == before
                close(nq, ref(q.double(), pos, cache.double(), head, neox), dtype, f"rope q {neox}")
                close(nk, ref(k.double(), pos, cache.double(), head, neox), dtype, f"rope k {neox}")
    """)


def test_reshape_and_cache_writes_slots_and_skips_negative_ones():
    run("""
        torch.manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16, torch.int8):
            blocks, bs, heads, d = 3, 16, 2, 8
            make = (lambda *s: torch.randint(-100, 100, s, dtype=dtype)) if dtype == torch.int8 \\
                else (lambda *s: torch.randn(*s).to(dtype))
            kc, vc = make(blocks, bs, heads, d), make(blocks, bs, heads, d)
            key, value = make(5, heads, d), make(5, heads, d)
            slots = torch.tensor([0, 17, -1, 40, 5], dtype=torch.int32)  # -1 would be slot 47
            nkc, nvc = npu(kc), npu(vc)
            torch_npu._npu_reshape_and_cache(npu(key), npu(value), nkc, nvc, npu(slots))
            want_k, want_v = kc.clone().view(-1, heads, d), vc.clone().view(-1, heads, d)
            for i, s in enumerate(slots.tolist()):
                if s >= 0:
                    want_k[s], want_v[s] = key[i], value[i]
            assert torch.equal(nkc.cpu().view(-1, heads, d), want_k), dtype
            assert torch.equal(nvc.cpu().view(-1, heads, d), want_v), dtype
    """)


# A float64 paged attention reference shared by the attention tests.
ATTENTION_REF = """
def ref_attention(q, k, v, scale, masked=None):
    # q [N, Sq, D], k [KV_N, Skv, D], v [KV_N, Skv, Dv] float64; masked [Sq, Skv] bool (True =
    # excluded)
    group = q.shape[0] // k.shape[0]
    out = torch.zeros(*q.shape[:2], v.shape[-1], dtype=torch.float64)
    for h in range(q.shape[0]):
        kh, vh = k[h // group], v[h // group]
        for i in range(q.shape[1]):
            s = [scale * float(q[h, i] @ kh[j]) for j in range(kh.shape[0])
                 if masked is None or not masked[i, j]]
            idx = [j for j in range(kh.shape[0]) if masked is None or not masked[i, j]]
            if not s:
                continue
            top = max(s)
            w = [math.exp(x - top) for x in s]
            total = sum(w)
            for x, j in zip(w, idx):
                out[h, i] += x / total * vh[j]
    return out

def gather(cache, row, length, bs):  # cache [blocks, bs, KV_N, D] -> [KV_N, length, D]
    return torch.stack([cache[int(row[p // bs]), p % bs] for p in range(length)], 1)
"""


def test_paged_attention_matches_float64():
    run(
        ATTENTION_REF
        + textwrap.dedent(
            """
        torch.manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16):
            blocks, bs, kv_heads, heads, d = 6, 16, 2, 4, 32
            kc = torch.randn(blocks, bs, kv_heads, d).to(dtype)
            vc = torch.randn(blocks, bs, kv_heads, d).to(dtype)
            q = torch.randn(3, heads, d).to(dtype)
            table = torch.tensor([[4, 1, 0], [2, 0, 0], [5, 3, 0]], dtype=torch.int32)
            lens = torch.tensor([33, 1, 20], dtype=torch.int32)
            out = npu(torch.full((3, heads, d), 7.0).to(dtype))
            torch_npu._npu_paged_attention(
                query=npu(q), key_cache=npu(kc), value_cache=npu(vc), num_kv_heads=kv_heads,
                num_heads=heads, scale_value=0.125, block_table=npu(table), context_lens=lens,
                out=out)
            want = torch.stack([
                ref_attention(q[i].double().unsqueeze(1),
                              gather(kc.double(), table[i], int(lens[i]), bs),
                              gather(vc.double(), table[i], int(lens[i]), bs), 0.125).squeeze(1)
                for i in range(3)])
            close(out, want, dtype, "paged attention")
    """
        )
    )


def test_reshape_and_cache_siso_writes_slots_and_skips_negative_ones():
    """MLA's latent rows as one head, as vllm-ascend writes them."""
    run("""
        torch.manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16, torch.int8):
            blocks, bs, width = 3, 16, 48
            make = (lambda *s: torch.randint(-100, 100, s, dtype=dtype)) if dtype == torch.int8 \\
                else (lambda *s: torch.randn(*s).to(dtype))
            cache, key = make(blocks, bs, 1, width), make(5, 1, width)
            slots = torch.tensor([0, 17, -1, 40, 5], dtype=torch.int32)  # -1 would be slot 47
            ncache = npu(cache)
            torch_npu._npu_reshape_and_cache_siso(npu(key), ncache, npu(slots))
            want = cache.clone().view(-1, 1, width)
            for i, s in enumerate(slots.tolist()):
                if s >= 0:
                    want[s] = key[i]
            assert torch.equal(ncache.cpu().view(-1, 1, width), want), dtype
    """)


def test_paged_attention_mla_matches_float64_and_the_plugin_reference():
    run(
        ATTENTION_REF
        + textwrap.dedent(
            f"""
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from vllm_ascend_compat import ops
        torch.manual_seed(0)
        # a tiny latent cache, and DeepSeek's (head_size 576 > 256, block_size 128)
        for heads, lora, rope, bs in ((4, 32, 16, 16), (16, 512, 64, 128)):
            for dtype in (torch.float16, torch.bfloat16):
                width = lora + rope
                cache = torch.randn(6, bs, 1, width).to(dtype)
                q = torch.randn(3, heads, width).to(dtype)
                table = torch.tensor([[4, 1, 0], [2, 0, 0], [5, 3, 0]], dtype=torch.int32)
                lens = torch.tensor([bs * 2 + 1, 1, bs + 4], dtype=torch.int32)
                scale = width ** -0.5
                out = npu(torch.full((3, heads, lora), 7.0).to(dtype))
                torch_npu._npu_paged_attention_mla(
                    query=npu(q), key_cache=npu(cache), num_kv_heads=1, num_heads=heads,
                    scale_value=scale, block_table=npu(table), context_lens=lens,
                    mla_vheadsize=lora, out=out)
                want = []
                for i in range(3):
                    rows = gather(cache.double(), table[i], int(lens[i]), bs)  # [1, len, width]
                    want.append(ref_attention(q[i].double().unsqueeze(1), rows, rows[..., :lora],
                                              scale).squeeze(1))
                close(out, torch.stack(want), dtype, f"paged attention mla {{width}}")
                plugin = torch.empty(3, heads, lora, dtype=dtype)
                ops.REFERENCE["paged_attention_mla"](plugin, q, cache.squeeze(2), lora, scale,
                                                     table, lens)
                close(out, plugin.double(), dtype, f"paged attention mla vs plugin {{width}}")
    """
        )
    )


def test_fused_infer_attention_score_matches_float64():
    run(
        ATTENTION_REF
        + textwrap.dedent(
            """
        torch.manual_seed(0)
        mask2048 = npu(torch.triu(torch.ones(2048, 2048, dtype=torch.bool), diagonal=1))
        for dtype in (torch.float16, torch.bfloat16):
            # TND over a paged cache, sparse_mode 3, GQA: what the plugin's prefill passes,
            # with two requests in one call (actual_seq_lengths cumulative)
            blocks, bs, kv_heads, heads, d = 4, 128, 2, 4, 16
            kc = torch.randn(blocks, bs, kv_heads, d).to(dtype)
            vc = torch.randn(blocks, bs, kv_heads, d).to(dtype)
            q = torch.randn(9, heads, d).to(dtype)
            table = torch.tensor([[3, 1], [0, 2]], dtype=torch.int32)
            q_lens, kv_lens = [6, 3], [140, 3]
            out, lse = torch_npu.npu_fused_infer_attention_score(
                npu(q), npu(kc).flatten(2), npu(vc).flatten(2), atten_mask=mask2048,
                block_table=npu(table), actual_seq_lengths=[6, 9], actual_seq_lengths_kv=kv_lens,
                num_heads=heads, num_key_value_heads=kv_heads, scale=0.25, input_layout="TND",
                block_size=bs, sparse_mode=3)
            assert lse.shape == (0,) and lse.dtype == torch.float32
            want, start = torch.zeros(9, heads, d, dtype=torch.float64), 0
            for i in range(2):
                ql, kl = q_lens[i], kv_lens[i]
                masked = torch.arange(kl)[None, :] > torch.arange(ql)[:, None] + (kl - ql)
                want[start:start + ql] = ref_attention(
                    q[start:start + ql].double().transpose(0, 1),
                    gather(kc.double(), table[i], kl, bs),
                    gather(vc.double(), table[i], kl, bs), 0.25, masked).transpose(0, 1)
                start += ql
            close(out, want, dtype, "TND paged sparse 3")

            # the (blocknum, KV_N, blocksize, D) cache layout gives the same result
            out4, _ = torch_npu.npu_fused_infer_attention_score(
                npu(q), npu(kc).transpose(1, 2).contiguous(), npu(vc).transpose(1, 2).contiguous(),
                atten_mask=mask2048, block_table=npu(table), actual_seq_lengths=[6, 9],
                actual_seq_lengths_kv=kv_lens, num_heads=heads, num_key_value_heads=kv_heads,
                scale=0.25, input_layout="TND", block_size=bs, sparse_mode=3)
            close(out4, want, dtype, "TND paged 4-D cache")

            # BNSD, no paging, no mask, with the log-sum-exp
            qb, kb, vb = (torch.randn(2, heads, 5, d).to(dtype),
                          torch.randn(2, kv_heads, 7, d).to(dtype),
                          torch.randn(2, kv_heads, 7, d).to(dtype))
            out, lse = torch_npu.npu_fused_infer_attention_score(
                npu(qb), npu(kb), npu(vb), num_heads=heads, num_key_value_heads=kv_heads,
                scale=0.3, input_layout="BNSD", softmax_lse_flag=True)
            want = torch.stack([ref_attention(qb[i].double(), kb[i].double(), vb[i].double(), 0.3)
                                for i in range(2)])
            close(out, want, dtype, "BNSD")
            scores = 0.3 * qb.double() @ kb.double().repeat_interleave(2, 1).transpose(-1, -2)
            close(lse, torch.logsumexp(scores, -1, keepdim=True), torch.float32, "BNSD lse")

            # BSH with a full boolean mask (sparse_mode 0)
            m = torch.rand(5, 7) > 0.6
            m[:, 0] = False
            out, _ = torch_npu.npu_fused_infer_attention_score(
                npu(qb.transpose(1, 2).flatten(2).contiguous()),
                npu(kb.transpose(1, 2).flatten(2).contiguous()),
                npu(vb.transpose(1, 2).flatten(2).contiguous()), atten_mask=npu(m),
                num_heads=heads, num_key_value_heads=kv_heads, scale=0.3, input_layout="BSH")
            want = torch.stack([ref_attention(qb[i].double(), kb[i].double(), vb[i].double(),
                                              0.3, m)
                                for i in range(2)]).transpose(1, 2).flatten(2)
            close(out, want, dtype, "BSH masked")

            # Q_S = 1 (decode) over a paged BSH cache, block_size 16
            bs16 = 16
            kc16 = torch.randn(5, bs16, kv_heads, d).to(dtype)
            vc16 = torch.randn(5, bs16, kv_heads, d).to(dtype)
            qd = torch.randn(2, 1, heads * d).to(dtype)
            t16 = torch.tensor([[4, 0], [1, 2]], dtype=torch.int32)
            out, _ = torch_npu.npu_fused_infer_attention_score(
                npu(qd), npu(kc16).flatten(2), npu(vc16).flatten(2), block_table=npu(t16),
                actual_seq_lengths_kv=[20, 9], num_heads=heads, num_key_value_heads=kv_heads,
                scale=0.25, input_layout="BSH", block_size=bs16)
            want = torch.stack([
                ref_attention(qd[i].double().view(1, heads, d).transpose(0, 1),
                              gather(kc16.double(), t16[i], L, bs16),
                              gather(vc16.double(), t16[i], L, bs16),
                              0.25).transpose(0, 1).reshape(1, heads * d)
                for i, L in enumerate([20, 9])])
            close(out, want, dtype, "BSH paged decode")
    """
        )
    )


def test_grouped_matmul_matches_float64_and_the_plugin_reference():
    run(f"""
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from vllm_ascend_compat import ops
        torch.manual_seed(0)
        experts, m, k, n = 4, 11, 32, 24
        ends = [3, 3, 9, 11]  # expert 1 has no rows
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.randn(m, k).to(dtype)
            w = torch.randn(experts, n, k).to(dtype)  # [E, out, in], as the plugin keeps it
            want, start = torch.zeros(m, n, dtype=torch.float64), 0
            for e, end in enumerate(ends):
                want[start:end] = x[start:end].double() @ w[e].double().T
                start = end
            # weight [E, K, N] as a transposed view and dense; cumulative ends, then group sizes
            for weight in (npu(w).transpose(1, 2), npu(w.transpose(1, 2).contiguous())):
                (y,) = torch_npu.npu_grouped_matmul(
                    [npu(x)], [weight], group_list=npu(torch.tensor(ends)), split_item=2,
                    group_type=0, group_list_type=0)
                close(y, want, dtype, "grouped matmul")
            (y,) = torch_npu.npu_grouped_matmul(
                [npu(x)], [npu(w).transpose(1, 2)], group_list=npu(torch.tensor([3, 0, 6, 2])),
                split_item=3, group_type=0, group_list_type=1)
            close(y, want, dtype, "grouped matmul, group sizes")
            plugin = torch.zeros(m, n, dtype=dtype)
            ops.REFERENCE["grouped_matmul"](plugin, x, w, torch.tensor(ends))
            close(y, plugin.double(), dtype, "grouped matmul vs plugin")
    """)


def test_format_cast_records_the_format_and_keeps_the_matrix():
    """The emulator keeps the data in ND order; get_npu_format reports the cast's format,
    and a tensor never cast has its base format (ND; NCHW in 4-D, as DOCS's example)."""
    run(
        """
x = torch.randn(32, 16, dtype=torch.bfloat16)
nd = npu(x)
nz = torch_npu.npu_format_cast(nd, 29)
assert torch_npu.get_npu_format(nd) == 2 and torch_npu.get_npu_format(nz) == 29
assert torch_npu.get_npu_format(npu(torch.randn(2, 3, 4, 5))) == 0
assert torch.equal(nz.cpu(), x) and nz.data_ptr() != nd.data_ptr()
"""
    )


# --- preconditions: each violating call raises RuntimeError naming the op ---

# Per op: code making a valid call's arguments `a` (a dict), the call, and cases: the
# precondition's name -> (code that breaks `a`, a fragment the message must contain).
PRECONDITIONS: dict[str, dict] = {
    "npu_rms_norm": {
        "setup": """
            a = dict(input=npu(torch.randn(4, 8, dtype=torch.float16)),
                     gamma=npu(torch.randn(8, dtype=torch.float16)), epsilon=1e-6)
            call = lambda: torch_npu.npu_rms_norm(**a)
        """,
        "cases": {
            "dtype": (
                "a['input'] = a['input'].double(); a['gamma'] = a['gamma'].double()",
                "input must be one of",
            ),
            "gamma_dtype": ("a['gamma'] = a['gamma'].float()", "gamma dtype"),
            "dims": ("a['input'] = a['input'].view(32)", "2 to 8 dimensions"),
            "gamma_shape": (
                "a['gamma'] = npu(torch.randn(4, dtype=torch.float16))",
                "trailing dims",
            ),
        },
    },
    "npu_add_rms_norm": {
        "setup": """
            a = dict(x1=npu(torch.randn(4, 8, dtype=torch.bfloat16)),
                     x2=npu(torch.randn(4, 8, dtype=torch.bfloat16)),
                     gamma=npu(torch.randn(8, dtype=torch.bfloat16)))
            call = lambda: torch_npu.npu_add_rms_norm(**a)
        """,
        "cases": {
            "dtype": ("a['x2'] = a['x2'].half()", "x1 torch.bfloat16 and x2 torch.float16"),
            "shape": ("a['x2'] = npu(torch.randn(2, 8, dtype=torch.bfloat16))", "must match"),
            "gamma_dtype": ("a['gamma'] = a['gamma'].float()", "gamma dtype"),
        },
    },
    "npu_swiglu": {
        "setup": """
            a = dict(input=npu(torch.randn(4, 8, dtype=torch.bfloat16)), dim=-1)
            call = lambda: torch_npu.npu_swiglu(**a)
        """,
        "cases": {
            "dtype": ("a['input'] = a['input'].double()", "input must be one of"),
            "odd": ("a['input'] = npu(torch.randn(4, 7, dtype=torch.bfloat16))", "must be even"),
            "dims": (
                "a['input'] = npu(torch.randn([1] * 9, dtype=torch.bfloat16))",
                "1 to 8 dimensions",
            ),
        },
    },
    "npu_weight_quant_batchmatmul": {
        "setup": """
            w = torch.randint(-8, 8, (24, 64), dtype=torch.int8)
            a = dict(x=npu(torch.randn(3, 64, dtype=torch.bfloat16)), weight=npu(w).t(),
                     antiquant_scale=npu(torch.rand(24, dtype=torch.bfloat16)))
            call = lambda: torch_npu.npu_weight_quant_batchmatmul(**a)
        """,
        "cases": {
            "x_dtype": (
                "a['x'] = a['x'].float(); a['antiquant_scale'] = a['antiquant_scale'].float()",
                "x must be one of",
            ),
            "weight_dtype": ("a['weight'] = a['weight'].to(torch.int16)", "weight must be one of"),
            "scale_dtype": (
                "a['antiquant_scale'] = a['antiquant_scale'].float()",
                "antiquant_scale dtype",
            ),
            "scale_shape": (
                "a['antiquant_scale'] = npu(torch.rand(5, dtype=torch.bfloat16))",
                "antiquant_scale shape",
            ),
            "k_mismatch": ("a['x'] = npu(torch.randn(3, 32, dtype=torch.bfloat16))", "(K, N)"),
            "x_dims": ("a['x'] = a['x'].unsqueeze(0)", "x must be 2-D"),
            "group_size": ("a['antiquant_group_size'] = 48", "antiquant_group_size"),
            "bias_dtype": (
                "a['bias'] = npu(torch.randn(24, dtype=torch.bfloat16))",
                "bias must be torch.float32",
            ),
            "bias_contiguous": (
                "a['bias'] = npu(torch.randn(24, 2)).t()[0]",
                "bias must be contiguous",
            ),
            "offset_shape": (
                "a['antiquant_offset'] = npu(torch.rand(1, dtype=torch.bfloat16))",
                "antiquant_offset shape",
            ),
            "quant_scale": ("a['quant_scale'] = npu(torch.rand(24))", "not emulated"),
        },
    },
    "npu_quantize": {
        "setup": """
            a = dict(input=npu(torch.randn(3, 16, dtype=torch.bfloat16)),
                     scales=npu(torch.rand(16, dtype=torch.bfloat16)),
                     zero_points=npu(torch.zeros(16, dtype=torch.bfloat16)),
                     dtype=torch.qint8, axis=-1, div_mode=False)
            call = lambda: torch_npu.npu_quantize(**a)
        """,
        "cases": {
            "out_dtype": ("a['dtype'] = torch.quint8", "not emulated"),
            "input_dtype": ("a['input'] = a['input'].double()", "input must be one of"),
            "scales_shape": (
                "a['scales'] = npu(torch.rand(8, dtype=torch.bfloat16)); "
                "a['zero_points'] = npu(torch.zeros(8, dtype=torch.bfloat16))",
                "scales shape",
            ),
            "zero_points_dtype": (
                "a['zero_points'] = a['zero_points'].float()",
                "shape and dtype of scales",
            ),
            "div_mode_scales": (
                "a['div_mode'] = True; a['scales'] = a['scales'].half(); a['zero_points'] = None",
                "scales must be one of",
            ),
            "host": ("a['input'] = a['input'].cpu()", "device (npu) tensor"),
        },
    },
    "npu_dynamic_quant": {
        "setup": """
            a = dict(input=npu(torch.randn(3, 16, dtype=torch.float16)))
            call = lambda: torch_npu.npu_dynamic_quant(**a)
        """,
        "cases": {
            "dtype": ("a['input'] = a['input'].float()", "input must be one of"),
            "dims": ("a['input'] = a['input'][0]", "more than 1 dimension"),
            "smooth": ("a['smooth_scales'] = npu(torch.rand(16).half())", "not emulated"),
            "int4": ("a['dst_type'] = torch.quint4x2", "not emulated"),
        },
    },
    "npu_quant_matmul": {
        "setup": """
            w = npu(torch.randint(-8, 8, (24, 64), dtype=torch.int8))
            a = dict(x1=npu(torch.randint(-8, 8, (3, 64), dtype=torch.int8)), x2=w.t(),
                     scale=npu(torch.rand(24)), pertoken_scale=npu(torch.rand(3)),
                     bias=npu(torch.randn(24, dtype=torch.bfloat16)),
                     output_dtype=torch.bfloat16)
            call = lambda: torch_npu.npu_quant_matmul(**a)
        """,
        "cases": {
            "x1_dtype": ("a['x1'] = a['x1'].float()", "x1 must be one of"),
            "k_mismatch": (
                "a['x1'] = npu(torch.randint(-8, 8, (3, 32), dtype=torch.int8))",
                "(K, N)",
            ),
            "scale_shape": ("a['scale'] = npu(torch.rand(5))", "scale shape"),
            "fp16_scale": (
                "a['output_dtype'] = torch.float16; a['scale'] = a['scale'].bfloat16(); "
                "a['bias'] = a['bias'].half()",
                "scale must be one of",
            ),
            "fp16_float_bias_without_pertoken": (
                "a['output_dtype'] = torch.float16; a['pertoken_scale'] = None; "
                "a['bias'] = a['bias'].half()",
                "bias must be one of",
            ),
            "pertoken_dtype": ("a['pertoken_scale'] = a['pertoken_scale'].half()", "pertoken"),
            "pertoken_shape": ("a['pertoken_scale'] = npu(torch.rand(4))", "pertoken_scale shape"),
            "output_int8": ("a['output_dtype'] = torch.int8", "not emulated"),
            "int64_scale": ("a['scale'] = npu(torch.ones(24, dtype=torch.int64))", "scale must"),
        },
    },
    "npu_fused_infer_attention_score": {
        "setup": """
            mask = npu(torch.triu(torch.ones(2048, 2048, dtype=torch.bool), diagonal=1))
            kc = npu(torch.randn(3, 128, 2, 16, dtype=torch.float16))
            a = dict(query=npu(torch.randn(6, 4, 16, dtype=torch.float16)), key=kc.flatten(2),
                     value=kc.flatten(2), atten_mask=mask,
                     block_table=npu(torch.tensor([[2, 0]], dtype=torch.int32)),
                     actual_seq_lengths=[6], actual_seq_lengths_kv=[150], num_heads=4,
                     num_key_value_heads=2, scale=0.25, input_layout="TND", block_size=128,
                     sparse_mode=3)
            def call():
                q, k, v = a.pop("query"), a.pop("key"), a.pop("value")
                return torch_npu.npu_fused_infer_attention_score(q, k, v, **a)
        """,
        "cases": {
            "float32": (
                "a['query'] = a['query'].float(); a['key'] = a['key'].float(); a['value'] = "
                "a['value'].float()",
                "query must be one of",
            ),
            "kv_dtype": (
                "a['key'] = a['key'].bfloat16(); a['value'] = a['value'].bfloat16()",
                "must have query's dtype",
            ),
            "query_contiguous": (
                "a['query'] = npu(torch.randn(4, 6, 16, dtype=torch.float16)).transpose(0, 1)",
                "query must be contiguous",
            ),
            "key_contiguous": (
                "a['key'] = kc.transpose(1, 2).flatten(2).transpose(1, 2)[:, :128]",
                "key must be contiguous",
            ),
            "layout_dims": ("a['query'] = a['query'].flatten(1)", "must have 3 dims"),
            "layout_unknown": ("a['input_layout'] = 'SBH'", "not emulated"),
            "num_heads": (
                "a['num_heads'] = 8; a['num_key_value_heads'] = 2",
                "heads, num_heads is 8",
            ),
            "gqa_divisible": ("a['num_key_value_heads'] = 3", "multiple of num_key_value_heads"),
            "tnd_needs_seq_lengths": (
                "a['actual_seq_lengths'] = None",
                "required for input_layout TND",
            ),
            "tnd_cumulative": ("a['actual_seq_lengths'] = [4, 2]", "non-decreasing"),
            "pa_needs_kv_lengths": (
                "a['actual_seq_lengths_kv'] = None",
                "actual_seq_lengths_kv is required",
            ),
            "block_table_dtype": (
                "a['block_table'] = a['block_table'].long()",
                "block_table must be one of",
            ),
            "block_table_rows": (
                "a['block_table'] = npu(torch.tensor([[2, 0], [1, 0]], dtype=torch.int32))",
                "B=1 rows",
            ),
            "block_table_columns": (
                "a['block_table'] = a['block_table'][:, :1].contiguous()",
                "needs 2",
            ),
            "block_size_match": ("a['block_size'] = 256", "must equal the cache's block size"),
            "block_size_prefill": (
                "kc16 = npu(torch.randn(20, 16, 2, 16, dtype=torch.float16)); a['key'] = "
                "kc16.flatten(2); "
                "a['value'] = kc16.flatten(2); a['block_size'] = 16; "
                "a['block_table'] = npu(torch.arange(10, dtype=torch.int32).view(1, 10))",
                "multiple of 128 in [128, 512]",
            ),
            "sparse3_mask_missing": ("a['atten_mask'] = None", "needs atten_mask"),
            "sparse3_mask_shape": (
                "a['atten_mask'] = mask[:1024, :1024].contiguous()",
                "atten_mask must be (2048, 2048)",
            ),
            "sparse3_mask_content": (
                "a['atten_mask'] = npu(torch.tril(torch.ones(2048, 2048, dtype=torch.bool)))",
                "causal mask",
            ),
            "mask_dtype": ("a['atten_mask'] = a['atten_mask'].half()", "atten_mask must be one of"),
            "sparse_mode": ("a['sparse_mode'] = 7", "sparse_mode must be 0-4"),
            "block_table_device": (
                "a['block_table'] = a['block_table'].cpu()",
                "block_table must be a device",
            ),
            "quantized": ("a['quant_scale2'] = npu(torch.ones(1))", "not emulated"),
        },
    },
    "_npu_rotary_embedding": {
        "setup": """
            a = dict(positions=npu(torch.arange(5)),
                     query=npu(torch.randn(5, 64, dtype=torch.bfloat16)),
                     key=npu(torch.randn(5, 32, dtype=torch.bfloat16)), head_size=16,
                     cos_sin_cache=npu(torch.randn(32, 16, dtype=torch.bfloat16)),
                     is_neox_style=True)
            call = lambda: torch_npu._npu_rotary_embedding(**a)
        """,
        "cases": {
            "query_contiguous": (
                "qkv = npu(torch.randn(5, 128, dtype=torch.bfloat16)); a['query'] = qkv[:, :64]",
                "query must be contiguous",
            ),
            "key_contiguous": (
                "qkv = npu(torch.randn(5, 128, dtype=torch.bfloat16)); a['key'] = qkv[:, 64:96]",
                "key must be contiguous",
            ),
            "partial_rotary": (
                "a['head_size'] = 32; a['query'] = npu(torch.randn(5, 64, dtype=torch.bfloat16))",
                "head_size 32 must equal cos_sin_cache's width 16",
            ),
            "float32": (
                "a['query'] = a['query'].float(); a['key'] = a['key'].float(); "
                "a['cos_sin_cache'] = a['cos_sin_cache'].float()",
                "query must be one of",
            ),
            "cache_dtype": (
                "a['cos_sin_cache'] = a['cos_sin_cache'].float()",
                "cos_sin_cache torch.float32",
            ),
            "key_dtype": ("a['key'] = a['key'].half()", "key torch.float16"),
            "two_dims": ("a['query'] = a['query'].view(5, 4, 16)", "must be 2-D"),
            "tokens": ("a['positions'] = npu(torch.arange(4))", "tokens, positions 4"),
            "positions_device": (
                "a['positions'] = a['positions'].cpu()",
                "positions must be a device",
            ),
            "positions_range": (
                "a['positions'] = npu(torch.tensor([0, 1, 2, 3, 32]))",
                "positions must be in",
            ),
        },
    },
    "_npu_reshape_and_cache": {
        "setup": """
            kc = npu(torch.zeros(4, 16, 2, 8, dtype=torch.float16))
            a = dict(key=npu(torch.randn(3, 2, 8, dtype=torch.float16)),
                     value=npu(torch.randn(3, 2, 8, dtype=torch.float16)), key_cache=kc,
                     value_cache=torch.zeros_like(kc),
                     slot_indices=npu(torch.tensor([0, 5, -1], dtype=torch.int32)))
            call = lambda: torch_npu._npu_reshape_and_cache(**a)
        """,
        "cases": {
            "cache_contiguous": (
                "a['key_cache'] = npu(torch.zeros(4, 2, 16, 8, dtype=torch.float16)).transpose(1, "
                "2)",
                "key_cache must be contiguous",
            ),
            "float32": (
                "a['key'] = a['key'].float(); a['value'] = a['value'].float(); "
                "a['key_cache'] = a['key_cache'].float(); a['value_cache'] = "
                "a['value_cache'].float()",
                "key must be one of",
            ),
            "cache_dtype": (
                "a['key_cache'] = a['key_cache'].bfloat16()",
                "must have key/value's dtypes",
            ),
            "slot_dtype": (
                "a['slot_indices'] = a['slot_indices'].long()",
                "slot_indices must be one of",
            ),
            "slot_device": (
                "a['slot_indices'] = a['slot_indices'].cpu()",
                "slot_indices must be a device",
            ),
            "slot_range": (
                "a['slot_indices'] = npu(torch.tensor([0, 64, 1], dtype=torch.int32))",
                "num_blocks * block_size",
            ),
            "slot_repeat": (
                "a['slot_indices'] = npu(torch.tensor([3, 3, 1], dtype=torch.int32))",
                "repeat",
            ),
            "slot_count": (
                "a['slot_indices'] = npu(torch.tensor([0, 1], dtype=torch.int32))",
                "num_tokens=3",
            ),
            "key_dims": ("a['key'] = a['key'].flatten(1)", "[num_tokens, num_heads, head_size]"),
            "heads": (
                "a['key'] = npu(torch.randn(3, 1, 8, dtype=torch.float16))",
                "heads and head size",
            ),
        },
    },
    "_npu_paged_attention": {
        "setup": """
            kc = npu(torch.randn(4, 16, 2, 32, dtype=torch.bfloat16))
            q = npu(torch.randn(2, 4, 32, dtype=torch.bfloat16))
            a = dict(query=q, key_cache=kc, value_cache=kc.clone(), num_kv_heads=2, num_heads=4,
                     scale_value=0.2,
                     block_table=npu(torch.tensor([[0, 1], [3, 0]], dtype=torch.int32)),
                     context_lens=torch.tensor([20, 3], dtype=torch.int32), out=torch.empty_like(q))
            call = lambda: torch_npu._npu_paged_attention(**a)
        """,
        "cases": {
            "context_lens_on_device": (
                "a['context_lens'] = npu(a['context_lens'])",
                "context_lens must be a host",
            ),
            "context_lens_dtype": (
                "a['context_lens'] = a['context_lens'].long()",
                "context_lens must be one of",
            ),
            "float32": (
                "a['query'] = a['query'].float(); a['key_cache'] = a['key_cache'].float(); "
                "a['value_cache'] = a['value_cache'].float(); a['out'] = a['out'].float()",
                "query must be one of",
            ),
            "cache_dtype": (
                "a['value_cache'] = a['value_cache'].half()",
                "must have query's dtype",
            ),
            "out_contiguous": (
                "a['out'] = npu(torch.empty(4, 2, 32, dtype=torch.bfloat16)).transpose(0, 1)",
                "out must be contiguous",
            ),
            "block_size_16": (
                "a['key_cache'] = npu(torch.randn(4, 24, 2, 32, dtype=torch.bfloat16)); "
                "a['value_cache'] = a['key_cache']",
                "multiple of 16",
            ),
            "block_size_128": (
                "a['key_cache'] = npu(torch.randn(1, 256, 2, 32, dtype=torch.bfloat16)); "
                "a['value_cache'] = a['key_cache']; "
                "a['block_table'] = npu(torch.zeros(2, 1, dtype=torch.int32))",
                "at most 128",
            ),
            "head_size": (
                "a['query'] = npu(torch.randn(2, 4, 272, dtype=torch.bfloat16)); a['out'] = "
                "torch.empty_like(a['query']); "
                "a['key_cache'] = npu(torch.randn(4, 16, 2, 272, dtype=torch.bfloat16)); "
                "a['value_cache'] = a['key_cache']",
                "(0, 256]",
            ),
            "gqa": ("a['num_kv_heads'] = 3", "caches have 2 heads"),
            "num_heads": ("a['num_heads'] = 8", "equal query's 4 heads"),
            "block_table_dtype": (
                "a['block_table'] = a['block_table'].long()",
                "block_table must be one of",
            ),
            "block_table_range": (
                "a['block_table'] = npu(torch.tensor([[0, 4], [3, 0]], dtype=torch.int32))",
                "[0, num_blocks=4)",
            ),
            "block_table_device": (
                "a['block_table'] = a['block_table'].cpu()",
                "block_table must be a device",
            ),
            "context_too_long": (
                "a['context_lens'] = torch.tensor([40, 3], dtype=torch.int32)",
                "context_lens must be <=",
            ),
            "context_negative": (
                "a['context_lens'] = torch.tensor([-1, 3], dtype=torch.int32)",
                "negative",
            ),
            "batch": ("a['context_lens'] = torch.tensor([3], dtype=torch.int32)", "batch=2"),
        },
    },
    "_npu_reshape_and_cache_siso": {
        "setup": """
            a = dict(key=npu(torch.randn(3, 1, 48, dtype=torch.bfloat16)),
                     key_cache=npu(torch.zeros(4, 16, 1, 48, dtype=torch.bfloat16)),
                     slot_indices=npu(torch.tensor([0, 5, -1], dtype=torch.int32)))
            call = lambda: torch_npu._npu_reshape_and_cache_siso(**a)
        """,
        "cases": {
            "cache_contiguous": (
                "a['key_cache'] = npu(torch.zeros(4, 20, 1, 48, dtype=torch.bfloat16))[:, :16]",
                "key_cache must be contiguous",
            ),
            "float32": (
                "a['key'] = a['key'].float(); a['key_cache'] = a['key_cache'].float()",
                "key must be one of",
            ),
            "cache_dtype": ("a['key_cache'] = a['key_cache'].half()", "must have key's dtype"),
            "key_dims": ("a['key'] = a['key'].flatten(1)", "[num_tokens, num_heads, head_size]"),
            "cache_dims": (
                "a['key_cache'] = a['key_cache'].squeeze(2)",
                "must be [num_blocks, block_size, num_heads, head_size]",
            ),
            "head_size": (
                "a['key'] = npu(torch.randn(3, 1, 40, dtype=torch.bfloat16))",
                "heads and head size",
            ),
            "slot_dtype": (
                "a['slot_indices'] = a['slot_indices'].long()",
                "slot_indices must be one of",
            ),
            "slot_count": (
                "a['slot_indices'] = npu(torch.tensor([0, 1], dtype=torch.int32))",
                "num_tokens=3",
            ),
            "slot_device": (
                "a['slot_indices'] = a['slot_indices'].cpu()",
                "slot_indices must be a device",
            ),
            "key_device": ("a['key'] = a['key'].cpu()", "key must be a device"),
            "slot_range": (
                "a['slot_indices'] = npu(torch.tensor([0, 64, 1], dtype=torch.int32))",
                "num_blocks * block_size",
            ),
            "slot_repeat": (
                "a['slot_indices'] = npu(torch.tensor([3, 3, 1], dtype=torch.int32))",
                "repeat",
            ),
        },
    },
    "_npu_paged_attention_mla": {
        "setup": """
            q = npu(torch.randn(2, 4, 48, dtype=torch.bfloat16))
            a = dict(query=q, key_cache=npu(torch.randn(4, 16, 1, 48, dtype=torch.bfloat16)),
                     num_kv_heads=1, num_heads=4, scale_value=0.2,
                     block_table=npu(torch.tensor([[0, 1], [3, 0]], dtype=torch.int32)),
                     context_lens=torch.tensor([20, 3], dtype=torch.int32), mla_vheadsize=32,
                     out=npu(torch.empty(2, 4, 32, dtype=torch.bfloat16)))
            call = lambda: torch_npu._npu_paged_attention_mla(**a)
        """,
        "cases": {
            "context_lens_on_device": (
                "a['context_lens'] = npu(a['context_lens'])",
                "context_lens must be a host",
            ),
            "context_lens_dtype": (
                "a['context_lens'] = a['context_lens'].long()",
                "context_lens must be one of",
            ),
            "float32": (
                "a['query'] = a['query'].float(); a['key_cache'] = a['key_cache'].float(); "
                "a['out'] = a['out'].float()",
                "query must be one of",
            ),
            "cache_dtype": (
                "a['key_cache'] = a['key_cache'].half()",
                "key_cache torch.float16 must have query's dtype",
            ),
            "out_dtype": ("a['out'] = a['out'].half()", "out torch.float16 must have query's"),
            "out_contiguous": (
                "a['out'] = npu(torch.empty(4, 2, 32, dtype=torch.bfloat16)).transpose(0, 1)",
                "out must be contiguous",
            ),
            "mqa_cache": (
                "a['key_cache'] = npu(torch.randn(4, 16, 2, 48, dtype=torch.bfloat16)); "
                "a['num_kv_heads'] = 2",
                "MLA is MQA only",
            ),
            "mqa_num_kv_heads": ("a['num_kv_heads'] = 0", "MLA is MQA only"),
            "num_heads": ("a['num_heads'] = 8", "equal query's 4 heads"),
            "head_size_match": (
                "a['key_cache'] = npu(torch.randn(4, 16, 1, 40, dtype=torch.bfloat16))",
                "must equal query's 48",
            ),
            "head_size_576": (
                "a['query'] = npu(torch.randn(2, 4, 592, dtype=torch.bfloat16)); "
                "a['key_cache'] = npu(torch.randn(4, 16, 1, 592, dtype=torch.bfloat16))",
                "(0, 576]",
            ),
            "vheadsize_zero": ("a['mla_vheadsize'] = 0", "must be in (0, head_size=48]"),
            "vheadsize_above_head_size": (
                "a['mla_vheadsize'] = 64; a['out'] = npu(torch.empty(2, 4, 64, "
                "dtype=torch.bfloat16))",
                "must be in (0, head_size=48]",
            ),
            "out_shape": (
                "a['out'] = npu(torch.empty(2, 4, 48, dtype=torch.bfloat16))",
                "mla_vheadsize] = (2, 4, 32)",
            ),
            "block_size_16": (
                "a['key_cache'] = npu(torch.randn(4, 24, 1, 48, dtype=torch.bfloat16))",
                "multiple of 16",
            ),
            "block_size_128": (
                "a['key_cache'] = npu(torch.randn(1, 256, 1, 48, dtype=torch.bfloat16)); "
                "a['block_table'] = npu(torch.zeros(2, 1, dtype=torch.int32))",
                "at most 128",
            ),
            "batch_limit": (
                "a['query'] = npu(torch.randn(8193, 1, 48, dtype=torch.bfloat16)); "
                "a['num_heads'] = 1; a['out'] = npu(torch.empty(8193, 1, 32, "
                "dtype=torch.bfloat16)); a['block_table'] = npu(torch.zeros(8193, 1, "
                "dtype=torch.int32)); a['context_lens'] = torch.ones(8193, dtype=torch.int32)",
                "batch 8193 must be in (0, 8192]",
            ),
            "block_table_dtype": (
                "a['block_table'] = a['block_table'].long()",
                "block_table must be one of",
            ),
            "block_table_range": (
                "a['block_table'] = npu(torch.tensor([[0, 4], [3, 0]], dtype=torch.int32))",
                "[0, num_blocks=4)",
            ),
            "block_table_device": (
                "a['block_table'] = a['block_table'].cpu()",
                "block_table must be a device",
            ),
            "query_device": ("a['query'] = a['query'].cpu()", "query must be a device"),
            "context_too_long": (
                "a['context_lens'] = torch.tensor([40, 3], dtype=torch.int32)",
                "context_lens must be <=",
            ),
            "context_negative": (
                "a['context_lens'] = torch.tensor([-1, 3], dtype=torch.int32)",
                "negative",
            ),
            "batch": ("a['context_lens'] = torch.tensor([3], dtype=torch.int32)", "batch=2"),
        },
    },
    "npu_grouped_matmul": {
        "setup": """
            w = npu(torch.randn(4, 24, 32, dtype=torch.bfloat16))  # [E, out, in]
            a = dict(x=[npu(torch.randn(10, 32, dtype=torch.bfloat16))], weight=[w.transpose(1, 2)],
                     group_list=npu(torch.tensor([2, 2, 7, 10])), split_item=2, group_type=0,
                     group_list_type=0)
            call = lambda: torch_npu.npu_grouped_matmul(**a)
        """,
        "cases": {
            "float64": (
                "a['x'] = [a['x'][0].double()]; a['weight'] = [a['weight'][0].double()]",
                "x must be one of",
            ),
            "weight_dtype": (
                "a['weight'] = [a['weight'][0].half()]",
                "weight torch.float16 must have x's dtype",
            ),
            "output_dtype": ("a['output_dtype'] = torch.float16", "output_dtype"),
            "x_dims": ("a['x'] = [a['x'][0].unsqueeze(0)]", "x must be 2-D"),
            "weight_dims": ("a['weight'] = [a['weight'][0][0]]", "weight must be 3-D"),
            "k_mismatch": (
                "a['x'] = [npu(torch.randn(10, 16, dtype=torch.bfloat16))]",
                "(E, K, N)",
            ),
            "x_transposed": (
                "a['x'] = [npu(torch.randn(32, 10, dtype=torch.bfloat16)).t()]",
                "x must not be transposed",
            ),
            "inner_limit_k": (
                "a['x'] = [npu(torch.zeros(2, 65536, dtype=torch.bfloat16))]; "
                "a['weight'] = [npu(torch.zeros(1, 65536, 2, dtype=torch.bfloat16))]; "
                "a['group_list'] = npu(torch.tensor([2]))",
                "K=65536 must be < 65536",
            ),
            "inner_limit_n": (
                "a['x'] = [npu(torch.zeros(2, 8, dtype=torch.bfloat16))]; "
                "a['weight'] = [npu(torch.zeros(1, 8, 65536, dtype=torch.bfloat16))]; "
                "a['group_list'] = npu(torch.tensor([2]))",
                "N=65536 must be < 65536",
            ),
            "several_tensors": ("a['x'] = a['x'] * 2", "not emulated"),
            "group_type": ("a['group_type'] = 1", "group_type must be -1 or 0"),
            "group_type_none": ("a['group_type'] = -1", "not emulated"),
            "split_item": ("a['split_item'] = 0", "split_item must be 2 or 3"),
            "act_type": ("a['act_type'] = 5", "act_type 5"),
            "bias": ("a['bias'] = [npu(torch.zeros(24, dtype=torch.bfloat16))]", "bias: not"),
            "group_list_missing": ("a['group_list'] = None", "group_list is required"),
            "group_list_dtype": (
                "a['group_list'] = a['group_list'].int()",
                "group_list must be one of",
            ),
            "group_list_length": ("a['group_list'] = npu(torch.tensor([2, 10]))", "[E=4]"),
            "groups_1024": (
                "a['x'] = [npu(torch.zeros(1025, 32, dtype=torch.bfloat16))]; "
                "a['weight'] = [npu(torch.zeros(1025, 32, 2, dtype=torch.bfloat16))]; "
                "a['group_list'] = npu(torch.arange(1, 1026))",
                "must be 1 to 1024",
            ),
            "group_list_device": (
                "a['group_list'] = a['group_list'].cpu()",
                "group_list must be a device",
            ),
            "group_list_type": ("a['group_list_type'] = 2", "group_list_type must be 0 or 1"),
            "negative": (
                "a['group_list'] = npu(torch.tensor([-1, 2, 7, 10]))",
                "must be non-negative",
            ),
            "decreasing": (
                "a['group_list'] = npu(torch.tensor([2, 1, 7, 10]))",
                "non-decreasing",
            ),
            "last_end": (
                "a['group_list'] = npu(torch.tensor([2, 2, 7, 9]))",
                "last value 9 must be x's M=10",
            ),
            "sizes_sum": ("a['group_list_type'] = 1", "sum to 21, not x's M=10"),
            "sizes_length_1": (
                "a['weight'] = [a['weight'][0][:1]]; a['group_list'] = npu(torch.tensor([10])); "
                "a['group_list_type'] = 1",
                "must not have length 1",
            ),
        },
    },
    "npu_format_cast": {
        "setup": """
            a = dict(input=npu(torch.randn(32, 16, dtype=torch.bfloat16)), acl_format=29)
            call = lambda: torch_npu.npu_format_cast(**a)
        """,
        "cases": {
            "format": ("a['acl_format'] = 5", "acl_format 5 is none of"),
            "strided_internal": (
                "a['input'] = torch_npu.npu_format_cast(a['input'], 29).t()",
                "non-contiguous tensor with internal format",
            ),
        },
    },
}

_RESULTS: dict[str, dict[str, str | None]] = {}


def _results(op: str) -> dict[str, str | None]:
    """Run the valid call and every violating call of ``op`` in one fresh interpreter; the
    message each raised (None when it did not raise)."""
    if op not in _RESULTS:
        spec = PRECONDITIONS[op]
        cases = {"valid": "", **{name: code for name, (code, _) in spec["cases"].items()}}
        out = run(
            f"""
cases = {json.dumps(cases)}
torch.manual_seed(0)
results = {{}}
setup = {json.dumps(textwrap.dedent(spec["setup"]))}
for name, code in cases.items():
    scope = dict(globals())
    exec(setup, scope)
    exec(code, scope)
    try:
        scope["call"]()
        results[name] = None
    except RuntimeError as error:
        results[name] = str(error)
print("RESULTS" + json.dumps(results))
"""
        )
        line = next(x for x in out.splitlines() if x.startswith("RESULTS"))
        _RESULTS[op] = json.loads(line[len("RESULTS") :])
    return _RESULTS[op]


@pytest.mark.parametrize("op", list(PRECONDITIONS))
def test_valid_call_raises_nothing(op: str) -> None:
    assert _results(op)["valid"] is None, _results(op)["valid"]


@pytest.mark.parametrize(
    ("op", "case"),
    [(op, case) for op, spec in PRECONDITIONS.items() for case in spec["cases"]],
    ids=[f"{op}-{case}" for op, spec in PRECONDITIONS.items() for case in spec["cases"]],
)
def test_violating_call_raises(op: str, case: str) -> None:
    message = _results(op)[case]
    assert message is not None, f"{op}: {case} did not raise"
    qualified = f"{SCHEMAS[op]['namespace']}::{op}"
    assert qualified in message, message
    fragment = PRECONDITIONS[op]["cases"][case][1]
    assert fragment in message, f"{case}: expected {fragment!r} in {message!r}"


# --- the plugin's own NPU kernels (csrc/npu_kernels.cpp) reach these ops ---


def test_plugin_npu_kernels_run_on_the_emulated_ops():
    """The plugin's PrivateUse1 kernels find each op by full name and bind it by argument
    name (call_npu); with valid inputs their results match the plugin's own pure-torch CPU
    reference kernels. Builds the plugin's C++ ops (cached, like the emulator)."""
    run(f"""
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from vllm_ascend_compat import ops
        assert ops.register() == "compiled"
        C = torch.ops._C_ascend_compat
        torch.manual_seed(0)
        dt, T, H, KV, D = torch.bfloat16, 4, 4, 2, 64
        class Host:  # an argument that stays on the host in the npu call too
            def __init__(self, t):
                self.t = t
        def both(name, *args):  # the same call on npu (compiled) and cpu (reference)
            on_npu = [a.t.clone() if isinstance(a, Host) else
                      npu(a.clone()) if isinstance(a, torch.Tensor) else a for a in args]
            on_cpu = [a.t.clone() if isinstance(a, Host) else
                      a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            getattr(C, name)(*on_npu)
            ops.REFERENCE[name](*on_cpu)
            for got, want in zip(on_npu, on_cpu):
                if isinstance(got, torch.Tensor) and got.is_floating_point():
                    close(got, want.double(), got.dtype, name)
        x, w = torch.randn(T, 64, dtype=dt), torch.randn(64, dtype=dt)
        both("rms_norm", torch.empty(T, 64, dtype=dt), x, w, 1e-6)
        both("fused_add_rms_norm", x, torch.randn(T, 64, dtype=dt), w, 1e-6)
        both("silu_and_mul", torch.empty(T, 32, dtype=dt), x)
        pos, cache = torch.tensor([5, 0, 9, 2]), torch.randn(16, D, dtype=dt)
        both("rotary_embedding", pos, torch.randn(T, H * D, dtype=dt),
             torch.randn(T, KV * D, dtype=dt), D, cache, True)
        kc = torch.randn(3, 128, KV, D, dtype=dt)
        both("reshape_and_cache", torch.randn(T, KV, D, dtype=dt), torch.randn(T, KV, D, dtype=dt),
             kc, kc.clone(), torch.tensor([0, 130, -1, 300]))
        # seq_lens on the host, as the ATB op reads it
        both("paged_attention", torch.empty(2, H, D, dtype=dt), torch.randn(2, H, D, dtype=dt),
             kc, kc.clone(), KV, 0.125, torch.tensor([[2, 0], [1, 0]], dtype=torch.int32),
             Host(torch.tensor([140, 7], dtype=torch.int32)))
        # MLA: kv_c and k_pe are slices of one projection, with more tokens than slots
        L, R = 32, 16
        latent = torch.randn(3, 128, L + R, dtype=dt)
        kv_a = torch.randn(T + 2, L + R + 8, dtype=dt)
        mla_slots = torch.tensor([0, 130, -1, 300, 7])
        both("concat_and_cache_mla", kv_a[:, :L], kv_a[:, L : L + R].unsqueeze(1), latent,
             mla_slots)
        mla_q, mla_table = torch.randn(2, H, L + R, dtype=dt), torch.tensor([[2, 0], [1, 0]],
                                                                            dtype=torch.int32)
        mla_lens = torch.tensor([140, 7], dtype=torch.int32)
        both("paged_attention_mla", torch.empty(2, H, L, dtype=dt), mla_q, latent, L, 0.125,
             mla_table, Host(mla_lens))
        # a cache whose blocks are strided (a view of a larger allocation) and a strided out:
        # through contiguous copies, the rows between the blocks untouched
        whole = torch.randn(3, 130, L + R, dtype=dt)
        on_npu, kv_a_npu = npu(whole), npu(kv_a)
        C.concat_and_cache_mla(kv_a_npu[:, :L], kv_a_npu[:, L : L + R], on_npu[:, :128],
                               npu(mla_slots))
        want = whole.clone()
        ops.REFERENCE["concat_and_cache_mla"](kv_a[:, :L], kv_a[:, L : L + R], want[:, :128],
                                              mla_slots)
        assert torch.equal(on_npu.cpu(), want), "concat_and_cache_mla, strided blocks"
        out = npu(torch.zeros(2, H, L + 4, dtype=dt))[..., :L]
        C.paged_attention_mla(out, npu(mla_q), on_npu[:, :128], L, 0.125, npu(mla_table),
                              mla_lens)
        ref = torch.empty(2, H, L, dtype=dt)
        ops.REFERENCE["paged_attention_mla"](ref, mla_q, want[:, :128], L, 0.125, mla_table,
                                             mla_lens)
        close(out, ref.double(), dt, "paged_attention_mla, strided cache and out")
        # MoE: the rows past the last group end (another rank's experts) keep their values,
        # even when their input is not finite
        experts, ends = torch.randn(4, 24, 64, dtype=dt), torch.tensor([1, 1, 3, T])
        rows = torch.randn(T + 3, 64, dtype=dt)
        both("grouped_matmul", torch.full((T + 3, 24), 3.0, dtype=dt), rows, experts, ends)
        rows[T:] = float("nan")
        moe_out = npu(torch.full((T + 3, 24), 3.0, dtype=dt))
        C.grouped_matmul(moe_out, npu(rows), npu(experts), npu(ends))
        assert moe_out.cpu()[T:].eq(3.0).all(), "grouped_matmul wrote past the last group end"
        w8 = torch.randint(-8, 8, (32, 64), dtype=torch.int8)
        both("int8_weight_linear", torch.empty(T, 32, dtype=dt), x, w8,
             (torch.rand(32) * 0.1).to(dt), torch.randn(32).to(dt), None)
        # the int8 ops compare exactly (a rounding tie may differ by one step)
        xq, xq_cpu = npu(torch.empty(T, 64, dtype=torch.int8)), torch.empty(T, 64, dtype=torch.int8)
        s, o = (torch.rand(64) * 4 + 1).to(dt), torch.randint(-5, 5, (64,)).to(dt)
        C.quantize_int8(xq, npu(x), npu(s), npu(o))
        ops.REFERENCE["quantize_int8"](xq_cpu, x, s, o)
        assert (xq.cpu().int() - xq_cpu.int()).abs().max() <= 1, "quantize_int8"
        tok, tok_cpu = npu(torch.empty(T)), torch.empty(T)
        C.dynamic_quant_int8(xq, tok, npu(x))
        ops.REFERENCE["dynamic_quant_int8"](xq_cpu, tok_cpu, x)
        assert (xq.cpu().int() - xq_cpu.int()).abs().max() <= 1, "dynamic_quant_int8"
        assert torch.equal(tok.cpu(), tok_cpu), "dynamic_quant_int8 scale"
        deq = torch.rand(32) * 1e-3
        both("int8_linear", torch.empty(T, 32, dtype=dt), xq_cpu, w8, deq, None,
             torch.randint(-500, 500, (32,), dtype=torch.int32))
        both("int8_linear", torch.empty(T, 32, dtype=dt), xq_cpu, w8, deq, tok_cpu,
             torch.randn(32).to(dt))
    """)
