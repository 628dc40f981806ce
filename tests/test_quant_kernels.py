"""The int8 ops of quantization "ascend" against plain torch references written here.

Each op runs compiled (C++, CPU), as the pure-torch fallback of ops.py (``REFERENCE``,
what runs when no compiler is there), and on the Meta device (shapes only). The
references below restate the documented math (docs/architecture.md) in int64 / float64,
apart from the activation quantizers, whose float32 arithmetic is the contract (their
rounding ties are part of it). The emulated npu device's side is in test_emulator_ops.py.
"""

from __future__ import annotations

import pytest
import torch

from vllm_ascend_compat import ops

pytestmark = pytest.mark.release_independent
C = torch.ops._C_ascend_compat
TOLERANCE = {
    torch.float32: {"atol": 1e-3, "rtol": 1e-5},  # sums of 1024 terms of up to about 10
    torch.bfloat16: {"atol": 5e-2, "rtol": 2e-2},
    torch.float16: {"atol": 5e-3, "rtol": 2e-3},
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 128, 384), (7, 130, 67), (33, 1024, 2752)]


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    assert ops.register() == "compiled", "the C++ kernels did not build; see the log above"


@pytest.fixture(params=["compiled", "reference"])
def op(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """One of the ops, as the compiled kernel or as the pure-torch fallback."""
    if request.param == "compiled":
        return lambda name: getattr(C, name)
    return lambda name: ops.REFERENCE[name]


def _activations(tokens: int, k: int, dtype: torch.dtype, contiguous: bool = True):
    torch.manual_seed(tokens * 7919 + k)
    return (torch.randn(tokens, k + (0 if contiguous else 9)) * 3).to(dtype)[:, :k]


# --- references ---


def _round_sat(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).clamp(-128, 127).to(torch.int8)


def ref_quantize(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return _round_sat(x.float() * scale.float() + offset.float())


def ref_dynamic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    peak = x.float().abs().amax(dim=1)
    scale = peak / 127
    q = torch.zeros(x.shape, dtype=torch.int8)
    nonzero = peak > 0
    q[nonzero] = _round_sat(x.float()[nonzero] / scale[nonzero, None])
    return q, scale


def ref_int8_linear(x_q, weight, deq, pertoken, bias) -> torch.Tensor:  # type: ignore[no-untyped-def]
    acc = x_q.long() @ weight.long().t()
    if bias is not None and bias.dtype == torch.int32:
        acc = acc + bias.long()
    y = acc.double() * deq.double()
    if pertoken is not None:
        y = y * pertoken.double()[:, None]
    if bias is not None and bias.dtype != torch.int32:
        y = y + bias.double()
    return y


# --- W8A16 ---


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "k", "n"), SHAPES)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("extras", ["none", "bias", "offset+bias"])
def test_int8_weight_linear(op, dtype, tokens, k, n, contiguous, extras) -> None:  # type: ignore[no-untyped-def]
    x = _activations(tokens, k, dtype, contiguous)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) * 0.02 + 1e-3
    offset = torch.randint(-3, 4, (n,)).float() if "offset" in extras else None
    bias = torch.randn(n).to(dtype) if "bias" in extras else None
    got = torch.empty(tokens, n, dtype=dtype)
    op("int8_weight_linear")(got, x, weight, scale, offset, bias)
    w = weight.double() + (0 if offset is None else offset.double()[:, None])
    dequantized = (w * scale.double()[:, None]).to(dtype)  # in x's dtype, as CANN's antiquant
    want = x.double() @ dequantized.double().t()
    if bias is not None:
        want = want + bias.double()
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])


def test_int8_weight_linear_rejects_float_weights() -> None:
    x, scale = torch.randn(2, 16), torch.rand(8)
    with pytest.raises(RuntimeError, match="weight must be int8"):
        C.int8_weight_linear(torch.empty(2, 8), x, torch.randn(8, 16), scale, None, None)


# --- W8A8 activations ---


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
def test_quantize_int8(op, dtype, contiguous) -> None:  # type: ignore[no-untyped-def]
    x = _activations(9, 130, dtype, contiguous)
    x[0, :4] = torch.tensor([1e4, -1e4, 0.5, 1.5]).to(dtype)  # saturation; ties to even
    for scale, offset in [
        ((torch.rand(130) * 4 + 1).to(dtype), torch.randint(-9, 9, (130,)).to(dtype)),
        (torch.tensor([2.0]).to(dtype), torch.tensor([-3.0]).to(dtype)),  # per-tensor, size 1
    ]:
        got = torch.empty(9, 130, dtype=torch.int8)
        op("quantize_int8")(got, x, scale, offset)
        assert torch.equal(got, ref_quantize(x, scale, offset))
    got = torch.empty(9, 130, dtype=torch.int8)
    op("quantize_int8")(got, x, torch.ones(1), torch.zeros(1))
    assert got[0, :4].tolist() == [127, -128, 0, 2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
def test_dynamic_quant_int8(op, dtype, contiguous) -> None:  # type: ignore[no-untyped-def]
    x = _activations(9, 130, dtype, contiguous)
    x[3] = 0  # an all-zero row: scale 0, zeros
    got, scale = torch.empty(9, 130, dtype=torch.int8), torch.empty(9)
    op("dynamic_quant_int8")(got, scale, x)
    want, want_scale = ref_dynamic(x)
    assert torch.equal(scale, want_scale) and torch.equal(got, want)
    assert got.abs().amax(dim=1)[torch.arange(9) != 3].eq(127).all()  # each row's peak


def test_compiled_quantizers_refuse_a_float_out() -> None:
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="quantize_int8: out must be a contiguous int8"):
        C.quantize_int8(torch.empty(2, 8), x, torch.ones(8), torch.zeros(8))
    with pytest.raises(RuntimeError, match="dynamic_quant_int8: out must be"):
        C.dynamic_quant_int8(torch.empty(2, 8), torch.empty(2), x)


# --- W8A8 matmul ---


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "k", "n"), SHAPES)
@pytest.mark.parametrize("scheme", ["static", "dynamic", "dynamic+bias"])
def test_int8_linear(op, dtype, tokens, k, n, scheme) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(tokens + k + n)
    x_q = torch.randint(-128, 128, (tokens, k), dtype=torch.int8)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    deq = torch.rand(n) * 1e-4
    pertoken = torch.rand(tokens) + 0.5 if scheme != "static" else None
    if scheme == "static":
        bias = torch.randint(-50000, 50000, (n,), dtype=torch.int32)  # quant_bias
    else:
        bias = torch.randn(n).to(dtype) if scheme == "dynamic+bias" else None
    got = torch.empty(tokens, n, dtype=dtype)
    op("int8_linear")(got, x_q, weight, deq, pertoken, bias)
    want = ref_int8_linear(x_q, weight, deq, pertoken, bias)
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])


def test_int8_linear_accumulates_exactly_past_float32() -> None:
    """Partial sums of 127 * 127 terms pass 2**24 (where float32 stops holding odd
    integers) and cancel back to 127: only an exact int32 accumulation gives 127."""
    x_q = torch.full((2, 16385), 127, dtype=torch.int8)
    weight = torch.full((1, 16385), 127, dtype=torch.int8)
    weight[0, 8192:16384] = -127
    weight[0, 16384] = 1  # a float32 GEMM of these gives [127, 123] (measured, torch 2.14)
    got = torch.empty(2, 1)
    C.int8_linear(got, x_q, weight, torch.ones(1), None, None)
    assert got.flatten().tolist() == [127.0, 127.0]


# --- Meta: shapes only, for tracing ---


def test_every_op_accepts_meta_tensors() -> None:
    meta = {"device": "meta"}
    x = torch.empty(4, 16, **meta)
    x_q = torch.empty(4, 16, dtype=torch.int8, **meta)
    w = torch.empty(8, 16, dtype=torch.int8, **meta)
    out = torch.empty(4, 8, **meta)
    C.int8_weight_linear(out, x, w, torch.empty(8, **meta), None, None)
    C.quantize_int8(x_q, x, torch.empty(16, **meta), torch.empty(16, **meta))
    C.dynamic_quant_int8(x_q, torch.empty(4, **meta), x)
    C.int8_linear(out, x_q, w, torch.empty(8, **meta), torch.empty(4, **meta), None)


# --- the writer's arithmetic (quantize.py) ---


def test_quantize_weight_rounds_each_row_to_its_own_scale() -> None:
    from vllm_ascend_compat.quantize import quantize_weight

    torch.manual_seed(0)
    w = torch.randn(37, 65) * torch.rand(37, 1)
    w[3] = 0  # an all-zero row keeps a finite scale
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (37,)
    assert q[3].eq(0).all() and torch.isfinite(scale).all()
    nonzero = w.abs().amax(dim=1) > 0
    assert q.abs().amax(dim=1)[nonzero].eq(127).all()  # the row's max maps to +-127
    error = (q.float() * scale[:, None] - w).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()


def test_static_layer_tensors_reproduce_the_float_layer() -> None:
    """W8A8 as written: (x_q @ W_q^T + quant_bias) * deq_scale = x @ W^T + bias, up to the
    int8 rounding of x and W; and fp16 checkpoints carry deq_scale's float32 bits."""
    from vllm_ascend_compat.quantize import quantize_layer

    torch.manual_seed(1)
    x, weight, bias = torch.randn(6, 64) * 2, torch.randn(32, 64) * 0.1, torch.randn(32)
    t = quantize_layer("W8A8", weight, bias, (x.min().item(), x.max().item()))
    x_q = ref_quantize(x, 1 / t["input_scale"], t["input_offset"])
    got = ref_int8_linear(x_q, t["weight"], t["deq_scale"], None, t["quant_bias"])
    want = (x.double() @ weight.double().t()) + bias.double()
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    act = (x.min().item(), x.max().item())
    half = quantize_layer("W8A8", weight.half(), None, act)
    single = quantize_layer("W8A8", weight.half().float(), None, act)
    assert half["deq_scale"].dtype == torch.int64
    assert torch.equal(half["deq_scale"].to(torch.int32).view(torch.float32), single["deq_scale"])
