"""The compiled CPU kernels against the pure-torch reference kernels, op by op."""

from __future__ import annotations

import pytest
import torch

from vllm_ascend_compat import ops

pytestmark = pytest.mark.release_independent
C = torch.ops._C_ascend_compat
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOLERANCE = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
}


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    assert ops.register() == "compiled", "the C++ kernels did not build; see the log above"


def _rows(tokens: int, width: int, dtype: torch.dtype, contiguous: bool) -> torch.Tensor:
    """A [tokens, width] tensor; the non-contiguous one is a column slice of a wider one."""
    torch.manual_seed(tokens * 1000 + width)
    if contiguous:
        return torch.randn(tokens, width).to(dtype)
    return torch.randn(tokens, width + 24).to(dtype)[:, 8 : 8 + width]


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got.float(), want.float(), **TOLERANCE[want.dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "hidden"), [(1, 64), (7, 130), (33, 4096), (3, 5)])
@pytest.mark.parametrize("contiguous", [True, False])
def test_rms_norm(dtype: torch.dtype, tokens: int, hidden: int, contiguous: bool) -> None:
    x = _rows(tokens, hidden, dtype, contiguous)
    w = torch.rand(hidden).to(dtype) + 0.5
    got, want = torch.empty(tokens, hidden, dtype=dtype), torch.empty(tokens, hidden, dtype=dtype)
    C.rms_norm(got, x, w, 1e-6)
    ops.rms_norm(want, x, w, 1e-6)
    _close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "hidden"), [(1, 64), (7, 130), (33, 4096)])
@pytest.mark.parametrize("contiguous", [True, False])
def test_fused_add_rms_norm(dtype: torch.dtype, tokens: int, hidden: int, contiguous: bool) -> None:
    x = _rows(tokens, hidden, dtype, contiguous)
    residual = _rows(tokens + 1, hidden, dtype, contiguous)[:tokens]
    w = torch.rand(hidden).to(dtype) + 0.5
    x_ref, r_ref = x.clone(), residual.clone()
    C.fused_add_rms_norm(x, residual, w, 1e-6)
    ops.fused_add_rms_norm(x_ref, r_ref, w, 1e-6)
    _close(residual, r_ref)
    _close(x, x_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "width"), [(1, 128), (5, 154), (64, 2 * 1376)])
@pytest.mark.parametrize("contiguous", [True, False])
def test_silu_and_mul(dtype: torch.dtype, tokens: int, width: int, contiguous: bool) -> None:
    x = _rows(tokens, width, dtype, contiguous)
    got = torch.empty(tokens, width // 2, dtype=dtype)
    want = torch.empty_like(got)
    C.silu_and_mul(got, x)
    ops.silu_and_mul(want, x)
    _close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (8, 1)])
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rotary_fraction", [1.0, 0.5])
def test_rotary_embedding_in_place_on_a_qkv_slice(
    dtype: torch.dtype, head_size: int, heads: int, kv_heads: int, is_neox: bool,
    rotary_fraction: float,
) -> None:  # fmt: skip
    tokens, max_pos = 13, 300
    rot_dim = int(head_size * rotary_fraction)
    torch.manual_seed(head_size + heads)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_size).to(dtype)
    q, k = qkv[:, : heads * head_size], qkv[:, heads * head_size : (heads + kv_heads) * head_size]
    cache = torch.randn(max_pos, rot_dim).to(dtype)
    positions = torch.randint(0, max_pos, (tokens,))
    q_ref, k_ref = q.clone(), k.clone()
    C.rotary_embedding(positions, q, k, head_size, cache, is_neox)
    ops.rotary_embedding(positions, q_ref, k_ref, head_size, cache, is_neox)
    _close(q, q_ref)
    _close(k, k_ref)


def _paged(blocks: int, block_size: int, kv_heads: int, head_size: int, dtype: torch.dtype):
    shape = (blocks, block_size, kv_heads, head_size)
    return torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 128])
@pytest.mark.parametrize("head_size", [64, 128])
def test_reshape_and_cache_with_padding_and_strided_keys(
    dtype: torch.dtype, block_size: int, head_size: int
) -> None:
    kv_heads, tokens = 2, 37
    key_cache, value_cache = _paged(8, block_size, kv_heads, head_size, dtype)
    kc_ref, vc_ref = key_cache.clone(), value_cache.clone()
    qkv = torch.randn(tokens, 3 * kv_heads * head_size).to(dtype)
    key = qkv[:, : kv_heads * head_size].view(tokens, kv_heads, head_size)
    value = qkv[:, kv_heads * head_size : 2 * kv_heads * head_size].view(
        tokens, kv_heads, head_size
    )
    slots = torch.randperm(8 * block_size)[:tokens]
    slots[[3, 20]] = -1  # padding tokens are not written
    C.reshape_and_cache(key, value, key_cache, value_cache, slots)
    ops.reshape_and_cache(key, value, kc_ref, vc_ref, slots)
    assert torch.equal(key_cache, kc_ref) and torch.equal(value_cache, vc_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 128])
@pytest.mark.parametrize("head_size", [64, 80, 128])  # 64 and 128 have kernels of their own
@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_paged_attention_gqa_and_block_boundaries(
    dtype: torch.dtype, block_size: int, head_size: int, group: int
) -> None:
    kv_heads = 2
    # the last sequence reads over 1 MB of cache, where the kernel prefetches
    lens = [1, block_size - 1, block_size, block_size + 1, 2 * block_size, 3 * block_size + 7,
            1100]  # fmt: skip
    blocks_per_seq = max((n + block_size - 1) // block_size for n in lens)
    num_blocks = blocks_per_seq * len(lens)
    torch.manual_seed(block_size + head_size + group)
    key_cache, value_cache = _paged(num_blocks, block_size, kv_heads, head_size, dtype)
    tables = torch.randperm(num_blocks).view(len(lens), blocks_per_seq).to(torch.int32)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    query = torch.randn(len(lens), kv_heads * group, head_size).to(dtype)
    got, want = torch.empty_like(query), torch.empty_like(query)
    scale = head_size**-0.5
    C.paged_attention(got, query, key_cache, value_cache, kv_heads, scale, tables, seq_lens)
    ops.paged_attention(want, query, key_cache, value_cache, kv_heads, scale, tables, seq_lens)
    _close(got, want)


def test_meta_kernels_let_the_ops_trace() -> None:
    out = torch.empty(4, 64, device="meta")
    C.rms_norm(out, torch.empty(4, 64, device="meta"), torch.empty(64, device="meta"), 1e-6)
    C.silu_and_mul(torch.empty(4, 32, device="meta"), torch.empty(4, 64, device="meta"))


def test_without_a_compiler_the_reference_kernels_serve_and_say_so(tmp_path) -> None:
    from conftest import check_python

    output = check_python(
        """
import torch
from vllm_ascend_compat import ops
print("KERNELS", ops.register())
out = torch.empty(2, 8)
torch.ops._C_ascend_compat.rms_norm(out, torch.ones(2, 8), torch.ones(8), 1e-6)
assert torch.allclose(out, torch.ones(2, 8), atol=1e-5)
""",
        VLLM_ASCEND_COMPAT_CACHE=str(tmp_path),
        CXX="/nonexistent/c++",
    )
    assert "KERNELS reference" in output
    assert output.count("C++ ops not available") == 1
