"""The plugin's NPU code path on the EMULATED npu device (emulator/README.md).

The emulator holds torch_npu's ops to their documented preconditions (contiguous inputs,
host context lengths, cache-width rotary heads, ...), so these tests show that the plugin
calls them the way the real ops need, and that the results match a float64 reference on
the CPU. They say nothing about a real NPU's numerics. Each interpreter is fresh, with
the emulator first on sys.path: torch_npu imports and sees devices, so the plugin's
activation picks NPU mode, as on an Ascend machine.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from conftest import REPO_ROOT, check_python, run_python
from packaging.version import Version

EMULATOR = REPO_ROOT / "emulator"
BUILD_TIMEOUT = 900  # cold builds of the emulator and of the plugin's ops

# NPU mode, as activation.decide() finds it when torch_npu sees a device.
PRELUDE = f"""
import sys
sys.path.insert(0, {str(EMULATOR)!r})
import torch
import torch_npu
from vllm_ascend_compat import activation, device, ops
assert activation.decide().device == "npu", activation.decide()
assert device.current().type == "npu"
"""

# The plugin's C++ ops, built and loaded; float64 comparison against a CPU reference.
COMPILED = """
assert ops.register() == "compiled"
C = torch.ops._C_ascend_compat
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

def close(got, want, what):
    assert got.device.type == "npu", (what, got.device)
    tol = TOL[got.dtype]
    err = (got.cpu().double() - want).abs().max().item()
    assert torch.allclose(got.cpu().double(), want, rtol=tol, atol=tol), f"{what}: error {err}"
"""

# The attention backend in NPU mode, driven by its own metadata builder. A step is a list of
# (cached tokens, new tokens) per request; the cache holds random keys and values for the
# cached tokens, and the reference is float64 causal attention over the final cache.
ATTENTION = """
from types import SimpleNamespace
from vllm_ascend_compat.attention import AscendAttentionImpl, AscendAttentionMetadataBuilder
from vllm_ascend_compat.attention import AttentionMetadataBuilder

DEV = torch.device("npu", 0)
H, KV, D, BS, BLOCKS, DT = 4, 2, 64, 128, 10, torch.bfloat16
SCALE = D ** -0.5

def make_builder():
    if "__init__" in vars(AttentionMetadataBuilder):  # 0.10+: (spec, layers, config, device)
        return AscendAttentionMetadataBuilder(None, ["layer"], None, DEV)
    table = SimpleNamespace(slot_mapping=torch.full((64,), -1, dtype=torch.int64, device=DEV))
    builder = AscendAttentionMetadataBuilder(SimpleNamespace(device=DEV), None, table)
    return builder, table

def make_impl():
    return AscendAttentionImpl(num_heads=H, head_size=D, scale=SCALE, num_kv_heads=KV)

def build(builder, requests):
    # requests: (cached, new) per request; blocks handed out in reverse, 2 per request
    starts, seq_lens, slots, table = [0], [], [], []
    for r, (cached, new) in enumerate(requests):
        blocks = [BLOCKS - 1 - 2 * r, BLOCKS - 2 - 2 * r]
        table.append(blocks)
        starts.append(starts[-1] + new)
        seq_lens.append(cached + new)
        slots += [blocks[p // BS] * BS + p % BS for p in range(cached, cached + new)]
    n, num_reqs = starts[-1], len(requests)
    host_starts = torch.tensor(starts, dtype=torch.int32)
    common = SimpleNamespace(
        query_start_loc=host_starts.to(DEV), query_start_loc_cpu=host_starts,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEV),
        seq_lens_cpu=torch.tensor(seq_lens, dtype=torch.int32),
        num_reqs=num_reqs, num_actual_tokens=n,
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=DEV),
        block_table_tensor=torch.tensor(table, dtype=torch.int32, device=DEV),
    )
    if isinstance(builder, tuple):  # 0.9.x: the builder copies the slots from the block table
        builder, block_table = builder
        block_table.slot_mapping_cpu = common.slot_mapping.cpu()
        block_table.get_device_tensor = lambda: common.block_table_tensor
    return builder.build(0, common, num_reqs=num_reqs, num_actual_tokens=n), table

def split_qkv(n, split):
    # vLLM's qkv projection, split: q, k, v are column slices, not contiguous
    qkv = torch.randn(n, (H + 2 * KV) * D).to(DT).to(DEV)
    q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
    assert n == 1 or not q.is_contiguous()  # one row is contiguous whatever its stride
    return (q, k, v) if split else (q.contiguous(), k.contiguous(), v.contiguous())

def reference(q, kv_cache, table, requests):
    # float64 causal attention of each request's new tokens over its cached rows
    kc, vc = kv_cache.cpu().double()
    q = q.cpu().double().view(-1, H, D)
    out, start = [], 0
    for (cached, new), blocks in zip(requests, table):
        rows = torch.cat([kc[b] for b in blocks])[: cached + new]  # [S, KV, D]
        vals = torch.cat([vc[b] for b in blocks])[: cached + new]
        k = rows.repeat_interleave(H // KV, dim=1).transpose(0, 1)  # [H, S, D]
        v = vals.repeat_interleave(H // KV, dim=1).transpose(0, 1)
        qr = q[start : start + new].transpose(0, 1)  # [H, new, D]
        scores = qr @ k.transpose(1, 2) * SCALE
        visible = torch.arange(cached + new)[None, :] <= torch.arange(new)[:, None] + cached
        scores = scores.masked_fill(~visible, float("-inf"))
        out.append((scores.softmax(-1) @ v).transpose(0, 1).reshape(new, H * D))
        start += new
    return torch.cat(out)

def new_cache():
    return torch.randn(2, BLOCKS, BS, KV, D).to(DT).to(DEV)

def run_step(impls, requests, builder=None, split=True):
    # one step: metadata built once, then every layer's forward; returns per-layer outputs
    meta, table = build(builder or make_builder(), requests)
    n = meta.num_actual_tokens
    results = []
    for impl in impls:
        q, k, v = split_qkv(n, split)
        cache = new_cache()
        out = torch.empty(n, H * D, dtype=DT, device=DEV)
        impl.forward(None, q, k, v, cache, meta, output=out)
        results.append((out, reference(q, cache, table, requests)))
    return results
"""


def _env() -> dict[str, str]:
    """The build cache the caller chose; C++ builds one job at a time unless told otherwise."""
    env = {"MAX_JOBS": os.environ.get("MAX_JOBS", "1")}
    if "VLLM_ASCEND_COMPAT_CACHE" in os.environ:
        env["VLLM_ASCEND_COMPAT_CACHE"] = os.environ["VLLM_ASCEND_COMPAT_CACHE"]
    return env


def run(*parts: str, **env: str) -> str:
    code = PRELUDE + "".join(textwrap.dedent(part) for part in parts)
    return check_python(code, timeout=BUILD_TIMEOUT, **_env(), **env)


# --- kernel build (release independent) ---


@pytest.mark.release_independent
def test_a_failed_kernel_build_is_fatal_in_npu_mode(tmp_path) -> None:
    """The NPU has no reference kernels to fall back to: a failed build must stop the
    process with the reason, not log it and leave the NPU ops missing."""
    code = PRELUDE + textwrap.dedent(f"""
        import os
        os.environ["VLLM_ASCEND_COMPAT_CACHE"] = {str(tmp_path)!r}  # a cold build ...
        os.environ["CXX"] = "/nonexistent/c++"  # ... that cannot compile
        for attempt in range(2):  # and again when asked again, not a half-defined namespace
            try:
                kernels = ops.register()
            except RuntimeError as err:
                print("REFUSED", err)
            else:
                print("KERNELS", kernels)
    """)
    proc = run_python(code, timeout=BUILD_TIMEOUT, **_env())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    refusals = [line for line in output.splitlines() if line.startswith("REFUSED")]
    assert len(refusals) == 2, output
    for refusal in refusals:
        assert "building the C++ ops failed" in refusal and "On an NPU" in refusal, refusal


# --- rotary embedding on the NPU path (release independent: the op itself) ---


@pytest.mark.release_independent
def test_rotary_op_rotates_non_contiguous_query_and_key_in_place() -> None:
    """vLLM hands over q and k as column slices of the qkv projection; ATB's rotary op
    takes contiguous tensors only. The rotation must land in the caller's views."""
    run(
        COMPILED,
        """
        torch.manual_seed(0)
        T, H, KV, D = 5, 4, 2, 64
        for dt in (torch.bfloat16, torch.float16):
            for neox in (True, False):
                qkv = torch.randn(T, (H + 2 * KV) * D).to(dt)
                cache = torch.randn(32, D).to(dt)
                pos = torch.tensor([3, 0, 31, 7, 7])
                want = qkv.clone()
                wq, wk, _ = want.split([H * D, KV * D, KV * D], dim=-1)
                ops.REFERENCE["rotary_embedding"](pos, wq, wk, D, cache, neox)
                got = qkv.to("npu")
                q, k, _ = got.split([H * D, KV * D, KV * D], dim=-1)
                assert not q.is_contiguous() and not k.is_contiguous()
                C.rotary_embedding(pos.to("npu"), q, k, D, cache.to("npu"), neox)
                close(got, want.double(), f"qkv {dt} neox={neox}")  # v untouched too
        """,
    )


@pytest.mark.release_independent
def test_rotary_op_rotates_only_the_rotary_dims_on_npu() -> None:
    """Partial rotary (rotary_dim < head_size): the cos/sin cache is rotary_dim wide, and
    only the first rotary_dim of each head turn; ATB rotates whole cache-width heads."""
    run(
        COMPILED,
        """
        torch.manual_seed(0)
        T, H, KV, D, R = 3, 4, 2, 64, 16
        for neox in (True, False):
            q, k = torch.randn(T, H * D).bfloat16(), torch.randn(T, KV * D).bfloat16()
            cache, pos = torch.randn(32, R).bfloat16(), torch.tensor([1, 30, 4])
            wq, wk = q.clone(), k.clone()
            ops.REFERENCE["rotary_embedding"](pos, wq, wk, D, cache, neox)
            assert not torch.equal(wq, q)  # the reference did rotate something
            nq, nk = q.to("npu"), k.to("npu")
            C.rotary_embedding(pos.to("npu"), nq, nk, D, cache.to("npu"), neox)
            close(nq, wq.double(), f"q neox={neox}")
            close(nk, wk.double(), f"k neox={neox}")
        """,
    )


# --- the layers and the attention backend (vLLM release dependent) ---


@pytest.mark.usefixtures("vllm_release")
def test_rotary_layer_on_npu_matches_vllm_native() -> None:
    """vLLM's RotaryEmbedding, swapped for the plugin's layer: split q/k views, full and
    partial rotary, on the npu device, against vLLM's own forward_native on the CPU."""
    run(
        COMPILED,
        """
        from vllm.config import VllmConfig, set_current_vllm_config
        from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding
        from vllm.plugins import load_general_plugins
        from vllm_ascend_compat import layers
        load_general_plugins()  # as every vLLM process does first (0.9.x: the OOT registry)
        layers.register()
        torch.manual_seed(0)
        T, H, KV, D = 6, 4, 2, 64
        for rotary_dim in (D, 32):
            with set_current_vllm_config(VllmConfig()):
                rope = RotaryEmbedding(D, rotary_dim, 256, 10000, True, torch.bfloat16)
            assert type(rope) is layers.AscendRotaryEmbedding
            positions = torch.randint(0, 256, (T,))
            qkv = torch.randn(T, (H + 2 * KV) * D).bfloat16()
            q, k, _ = qkv.split([H * D, KV * D, KV * D], dim=-1)
            want_q, want_k = rope.forward_native(positions, q.clone(), k.clone())
            on_npu = qkv.to("npu")
            nq, nk, _ = on_npu.split([H * D, KV * D, KV * D], dim=-1)
            rope.to("npu")
            got_q, got_k = rope.forward_oot(positions.to("npu"), nq, nk)
            close(got_q, want_q.double(), f"q rotary_dim={rotary_dim}")
            close(got_k, want_k.double(), f"k rotary_dim={rotary_dim}")
            close(nq, want_q.double(), f"q in the qkv buffer, rotary_dim={rotary_dim}")
        """,
    )


@pytest.mark.usefixtures("vllm_release")
@pytest.mark.parametrize(
    "requests",
    [
        # decodes reach ATB's paged attention, whose context_lens is host int32 data
        pytest.param([(139, 1), (6, 1), (200, 1)], id="decode"),
        # prefill and chunked prefill over a cached prefix reach fused infer attention,
        # which takes contiguous tensors only, with the query a column slice of vLLM's qkv
        pytest.param([(0, 5), (9, 6), (130, 17)], id="prefill"),
    ],
)
def test_attention_on_npu_takes_vllms_split_qkv(requests: list[tuple[int, int]]) -> None:
    """One step of (cached tokens, new tokens) per request, against float64 attention."""
    run(
        COMPILED,
        ATTENTION,
        f"""
        torch.manual_seed(0)
        [(out, want)] = run_step([make_impl()], {requests!r})
        close(out, want, "attention")
        """,
    )


@pytest.mark.usefixtures("vllm_release")
def test_mixed_decode_and_prefill_steps_on_npu() -> None:
    """Steps mixing decodes, fresh prefills and chunked prefills, over two layers."""
    run(
        COMPILED,
        ATTENTION,
        """
        torch.manual_seed(0)
        impls, builder = [make_impl(), make_impl()], make_builder()
        for step, requests in enumerate([[(0, 5), (30, 1), (130, 17), (255, 1)], [(6, 1)]]):
            for layer, (out, want) in enumerate(run_step(impls, requests, builder)):
                close(out, want, f"step {step} layer {layer}")
        """,
    )


@pytest.mark.usefixtures("vllm_release")
def test_prefill_causal_mask_is_built_once_per_device() -> None:
    """sparse_mode 3 reads a fixed 2048 x 2048 causal mask: one per device, shared by every
    request, layer and step, not a new 4 MiB tensor per request and layer."""
    run(
        COMPILED,
        ATTENTION,
        """
        masks = []
        fused = torch_npu.npu_fused_infer_attention_score
        def recording(*args, **kwargs):
            masks.append(kwargs["atten_mask"])  # keeps each alive: ids stay distinct
            return fused(*args, **kwargs)
        torch_npu.npu_fused_infer_attention_score = recording
        torch.manual_seed(0)
        impls, builder = [make_impl(), make_impl()], make_builder()
        for step in range(2):
            for out, want in run_step(impls, [(0, 5), (9, 6)], builder, split=False):
                close(out, want, f"step {step}")
        assert len(masks) == 8, len(masks)  # 2 steps x 2 layers x 2 prefills
        assert all(m is masks[0] for m in masks), f"{len({id(m) for m in masks})} masks"
        assert masks[0].device == DEV and masks[0].dtype == torch.bool
        """,
    )


# --- dtypes (vLLM release dependent: the platform) ---


@pytest.mark.usefixtures("vllm_release")
def test_npu_mode_refuses_a_float32_model_with_a_clear_message() -> None:
    """ATB's attention takes float16 / bfloat16 only: a float32 model dtype is refused when
    vLLM checks the config (and again in the worker), naming the dtype and what to pass."""
    run("""
        from types import SimpleNamespace
        from vllm.platforms import current_platform  # vLLM loads the plugin's platform first
        from vllm_ascend_compat.attention import AscendAttentionBackend
        NPUPlatform = type(current_platform)
        assert NPUPlatform.__module__ == "vllm_ascend_compat.platform", NPUPlatform
        backend_dtypes = AscendAttentionBackend.get_supported_dtypes()
        assert set(backend_dtypes) == {torch.float16, torch.bfloat16}, backend_dtypes
        for dtype in (torch.bfloat16, torch.float16):
            NPUPlatform.check_if_supports_dtype(dtype)
        def refusal(call):
            try:
                call()
            except ValueError as err:
                return str(err)
            raise AssertionError("float32 was accepted in NPU mode")
        for message in (
            refusal(lambda: NPUPlatform.check_if_supports_dtype(torch.float32)),
            refusal(lambda: NPUPlatform.check_and_update_config(
                SimpleNamespace(model_config=SimpleNamespace(dtype=torch.float32)))),
        ):
            assert "torch.float32" in message and "--dtype bfloat16" in message, message
    """)


def test_npu_mode_engine_config_refuses_float32_and_auto_picks_a_half_dtype(
    tiny_model, vllm_release: str
) -> None:
    """Through vLLM's own config building (no engine starts): an explicit float32 stops
    there, with the plugin's message; "auto" turns the float32 checkpoint into the
    platform's first dtype, bfloat16 (0.9.0 takes float16 for any float32 checkpoint,
    whatever the platform: its config.py, "Following common practice")."""
    output = run(
        f"""
        from vllm.engine.arg_utils import EngineArgs
        for dtype in ("auto", "float32"):
            try:
                config = EngineArgs(model={str(tiny_model)!r}, dtype=dtype, max_model_len=64,
                                    max_num_seqs=8).create_engine_config()
            except ValueError as err:
                print("REFUSED", dtype, str(err).replace("\\n", " "))  # pydantic wraps it
            else:
                print("CONFIG", dtype, config.model_config.dtype)
    """,
        HF_HUB_OFFLINE="1",
    )
    auto = "float16" if Version(vllm_release) < Version("0.9.1") else "bfloat16"
    assert f"CONFIG auto torch.{auto}" in output, output
    refusals = [line for line in output.splitlines() if line.startswith("REFUSED float32")]
    assert len(refusals) == 1, "float32 was not refused:\n" + output
    assert "torch.float32" in refusals[0] and "--dtype bfloat16" in refusals[0], refusals[0]


@pytest.mark.usefixtures("vllm_release")
def test_npu_mode_block_size_is_128_unless_chosen_and_only_128(tiny_model) -> None:
    """Through vLLM's own config building: no --block-size gives 128 (from 0.18 vLLM fills
    in 16 first, and the user did not choose it); a chosen 16 is refused with the reason,
    since the decode and the prefill kernels share no other size."""
    output = run(
        f"""
        from vllm.engine.arg_utils import EngineArgs
        for block_size in (None, 128, 16):
            try:
                config = EngineArgs(model={str(tiny_model)!r}, dtype="bfloat16",
                                    max_model_len=64, max_num_seqs=8,
                                    block_size=block_size).create_engine_config()
            except ValueError as err:
                print("REFUSED", block_size, str(err).replace("\\n", " "))
            else:
                print("CONFIG", block_size, config.cache_config.block_size)
    """,
        HF_HUB_OFFLINE="1",
    )
    assert "CONFIG None 128" in output and "CONFIG 128 128" in output, output
    [refused] = [line for line in output.splitlines() if line.startswith("REFUSED 16")]
    assert "--block-size 128, not 16" in refused, refused


@pytest.mark.usefixtures("vllm_release")
def test_cpu_mode_keeps_float32() -> None:
    check_python(
        """
import torch
from vllm.platforms import current_platform  # vLLM loads the plugin's platform first
from vllm_ascend_compat.attention import AscendAttentionBackend
assert type(current_platform).__module__ == "vllm_ascend_compat.platform", current_platform
current_platform.check_if_supports_dtype(torch.float32)
assert torch.float32 in current_platform.supported_dtypes
assert torch.float32 in AscendAttentionBackend.get_supported_dtypes()
""",
        VLLM_ASCEND_COMPAT_CPU="1",
    )


@pytest.mark.usefixtures("vllm_release")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_quantized_linear_methods_on_npu_match_the_cpu(dtype: str) -> None:
    """Each msModelSlim linear method of quantization "ascend", its weights prepared by
    process_weights_after_loading on the npu device, applies through the emulated
    torch_npu ops within their preconditions, and matches the same layer on the CPU."""
    run(
        COMPILED,
        f"""
        from vllm_ascend_compat import quantized_linear
        DT = torch.{dtype}
        torch.manual_seed(0)
        n, k = 48, 64
        values = {{
            "weight": torch.randint(-127, 128, (n, k), dtype=torch.int8),
            "weight_scale": torch.rand(n, 1) * 0.01, "weight_offset": torch.zeros(n, 1),
            "input_scale": torch.tensor([0.03]), "input_offset": torch.tensor([2.0]),
            "quant_bias": torch.randint(-900, 900, (n,), dtype=torch.int32),
            "deq_scale": torch.rand(n) * 3e-4,
        }}
        x, bias = torch.randn(5, k), torch.randn(n)

        def layer_on(method, device, dtype):
            layer = torch.nn.Module()
            layer.params_dtype = dtype
            with torch.device(device):  # as vLLM creates them, on the target device
                method.create_weights(layer, k, [n], k, n, dtype, weight_loader=None)
            with torch.no_grad():
                for name, param in layer.named_parameters():
                    param.copy_(values[name])
            method.process_weights_after_loading(layer)
            return layer

        for scheme, cls in quantized_linear.LINEAR_METHODS.items():
            method = cls("model.layers.0.mlp.down_proj")
            on_npu = layer_on(method, "npu", DT)
            on_cpu = layer_on(method, "cpu", torch.float32)
            got = method.apply(on_npu, x.to(DT).npu(), bias.to(DT).npu())
            want = method.apply(on_cpu, x.to(DT).float(), bias.to(DT).float())
            assert got.dtype == DT, (scheme, got.dtype)
            # the output's rounding to DT, and now and then one int8 rounding step of an
            # activation (the scales are applied in DT on the npu, in float32 on the cpu)
            tol = 0.02 * want.abs().max().item()
            err = (got.cpu().double() - want.double()).abs().max().item()
            assert err <= tol, (scheme, err, tol)
            print(scheme, DT, "max error vs cpu", err)
        """,
    )


@pytest.mark.usefixtures("vllm_release")
def test_unquantized_linear_weights_are_cast_to_fractal_nz_on_npu() -> None:
    """After loading, a half-precision linear weight on the npu device is FRACTAL_NZ (the
    emulator records the cast; the data stays the same matrix), and vLLM's own apply
    multiplies by it."""
    run(
        """
        from vllm.config import VllmConfig, set_current_vllm_config
        from vllm.model_executor.layers.linear import UnquantizedLinearMethod
        from vllm.plugins import load_general_plugins

        load_general_plugins()
        torch.manual_seed(0)
        with set_current_vllm_config(VllmConfig()):
            method = UnquantizedLinearMethod()
        layer = torch.nn.Module()
        weight = torch.randn(48, 64, dtype=torch.bfloat16)
        layer.weight = torch.nn.Parameter(weight.npu(), requires_grad=False)  # as loaded
        assert torch_npu.get_npu_format(layer.weight) == 2  # ND, as loaded
        method.process_weights_after_loading(layer)
        assert torch_npu.get_npu_format(layer.weight) == 29, torch_npu.get_npu_format(layer.weight)
        assert layer.weight.device.type == "npu" and isinstance(layer.weight, torch.nn.Parameter)
        x = torch.randn(5, 64, dtype=torch.bfloat16)
        got = method.apply(layer, x.npu())
        want = torch.nn.functional.linear(x.double(), weight.double())
        assert got.device.type == "npu"
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-2, atol=1e-2)  # bf16 output
        """,
    )
