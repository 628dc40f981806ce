"""The compiled W8A16 kernel (int8_weight_linear) against its pure-torch reference."""

from __future__ import annotations

import pytest
import torch

from vllm_ascend_compat import ops

pytestmark = pytest.mark.release_independent
C = torch.ops._C_ascend_compat
TOLERANCE = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-5},
    torch.bfloat16: {"atol": 5e-2, "rtol": 2e-2},
    torch.float16: {"atol": 5e-3, "rtol": 2e-3},
}


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    assert ops.register() == "compiled", "the C++ kernels did not build; see the log above"


def _case(tokens: int, k: int, n: int, dtype: torch.dtype, contiguous: bool):
    torch.manual_seed(tokens * 7919 + k * 31 + n)
    x = torch.randn(tokens, k + (0 if contiguous else 9)).to(dtype)[:, :k]
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) * 0.02 + 1e-3
    bias = torch.randn(n).to(dtype)
    return x, weight, scale, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("tokens", "k", "n"), [(1, 128, 384), (7, 130, 67), (33, 1024, 2752)])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_int8_weight_linear(
    dtype: torch.dtype, tokens: int, k: int, n: int, contiguous: bool, with_bias: bool
) -> None:
    x, weight, scale, bias = _case(tokens, k, n, dtype, contiguous)
    b = bias if with_bias else None
    got = torch.empty(tokens, n, dtype=dtype)
    want = torch.empty_like(got)
    C.int8_weight_linear(got, x, weight, scale, b)
    ops.int8_weight_linear(want, x, weight, scale, b)
    error = (got.float() - want.float()).abs().max().item()
    print(f"{dtype} {tokens}x{k}x{n}: max abs error vs reference {error:.2e}")
    torch.testing.assert_close(got, want, **TOLERANCE[dtype])


def test_int8_weight_linear_is_the_dequantized_float_linear() -> None:
    """fp32: the kernel equals F.linear on the dequantized weight (the e2e oracle's premise)."""
    x, weight, scale, bias = _case(5, 256, 96, torch.float32, True)
    got = torch.empty(5, 96)
    C.int8_weight_linear(got, x, weight, scale, bias)
    want = torch.nn.functional.linear(x, weight.float() * scale[:, None], bias)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_int8_weight_linear_rejects_float_weights() -> None:
    x, weight, scale, _ = _case(2, 16, 8, torch.float32, True)
    with pytest.raises(RuntimeError, match="weight must be int8"):
        C.int8_weight_linear(torch.empty(2, 8), x, weight.float(), scale, None)


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
