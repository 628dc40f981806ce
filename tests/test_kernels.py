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


def _latent_cache(blocks: int, block_size: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """An MLA cache whose blocks are further apart than their rows need, as a view of a
    larger allocation is; the rows between the blocks must stay untouched."""
    return torch.randn(blocks, block_size + 3, width).to(dtype)[:, :block_size]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("lora", "rope"), [(32, 16), (512, 64)])
@pytest.mark.parametrize("k_pe_heads", [False, True])
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
def test_concat_and_cache_mla_with_padding_strided_inputs_and_strided_blocks(
    dtype: torch.dtype, lora: int, rope: int, k_pe_heads: bool, slot_dtype: torch.dtype
) -> None:
    tokens, written, block_size, blocks = 37, 33, 16, 5
    torch.manual_seed(lora + rope)
    kv_a = torch.randn(tokens, lora + rope + 8).to(dtype)  # vLLM splits kv_c and k_pe off it
    kv_c, k_pe = kv_a[:, :lora], kv_a[:, lora : lora + rope]
    if k_pe_heads:
        k_pe = k_pe.unsqueeze(1)
    cache = _latent_cache(blocks, block_size, lora + rope, dtype)
    whole = cache.as_strided((blocks, block_size + 3, lora + rope), cache.stride())
    gaps = whole[:, block_size:].clone()
    want = cache.clone()
    slots = torch.randperm(blocks * block_size)[:written].to(slot_dtype)
    slots[[3, 20]] = -1  # padding tokens are not written; tokens past ``written`` neither
    C.concat_and_cache_mla(kv_c, k_pe, cache, slots)
    ops.concat_and_cache_mla(kv_c, k_pe, want, slots)
    assert torch.equal(cache, want)
    slot = int(slots[0])
    assert torch.equal(cache[slot // block_size, slot % block_size], kv_a[0, : lora + rope])
    assert torch.equal(whole[:, block_size:], gaps)


def test_concat_and_cache_mla_refuses_mixed_dtypes() -> None:
    cache = torch.zeros(2, 16, 48)
    with pytest.raises(RuntimeError, match="concat_and_cache_mla: kv_c, k_pe and kv_cache"):
        C.concat_and_cache_mla(
            torch.zeros(4, 32), torch.zeros(4, 16, dtype=torch.bfloat16), cache, torch.arange(4)
        )


def _mla_decode_inputs(
    lens: list[int], block_size: int, heads: int, width: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A strided latent cache, block tables out of order, the lengths, and a query whose
    heads are strided (a slice of a wider tensor)."""
    blocks_per_seq = max((n + block_size - 1) // block_size for n in lens)
    num_blocks = blocks_per_seq * len(lens)
    cache = _latent_cache(num_blocks, block_size, width, dtype)
    tables = torch.randperm(num_blocks).view(len(lens), blocks_per_seq).to(torch.int32)
    query = torch.randn(len(lens), heads, width + 8).to(dtype)[..., :width]
    return cache, tables, torch.tensor(lens, dtype=torch.int32), query


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize(("heads", "lora", "rope"), [(1, 32, 16), (13, 32, 16), (16, 512, 64)])
def test_paged_attention_mla_many_sequences_and_block_boundaries(
    dtype: torch.dtype, block_size: int, heads: int, lora: int, rope: int
) -> None:
    lens = [1, block_size - 1, block_size, block_size + 1, 3 * block_size + 7, 300]
    torch.manual_seed(block_size + heads + lora)
    cache, tables, seq_lens, query = _mla_decode_inputs(lens, block_size, heads, lora + rope, dtype)
    got = torch.zeros(len(lens), heads, lora + 4, dtype=dtype)[..., :lora]  # strided too
    want = torch.empty(len(lens), heads, lora, dtype=dtype)
    scale = (lora + rope) ** -0.5
    C.paged_attention_mla(got, query, cache, lora, scale, tables, seq_lens)
    ops.paged_attention_mla(want, query, cache, lora, scale, tables, seq_lens)
    _close(got, want)


def test_paged_attention_mla_one_long_sequence() -> None:
    """B = 1: with more than one thread, the heads of the one sequence are split."""
    torch.manual_seed(0)
    cache, tables, seq_lens, query = _mla_decode_inputs([2000], 16, 16, 48, torch.float32)
    got, want = torch.empty(1, 16, 32), torch.empty(1, 16, 32)
    C.paged_attention_mla(got, query, cache, 32, 0.3, tables, seq_lens)
    ops.paged_attention_mla(want, query, cache, 32, 0.3, tables, seq_lens)
    _close(got, want)


def test_paged_attention_mla_is_attention_with_the_projections_absorbed() -> None:
    """Against MLA computed the unabsorbed way: the latent expanded by kv_b_proj into each
    head's k_nope and v, the rope key appended, softmax attention per head. The absorbed
    query is q_nope @ W_UK per head, the absorbed output latent @ W_UV^T."""
    heads, lora, rope, nope, v_dim, block_size = 4, 32, 16, 24, 20, 16
    lens = [5, 16, 40]
    torch.manual_seed(7)
    kv_b = torch.randn(heads * (nope + v_dim), lora) * lora**-0.5  # nn.Linear's [out, in]
    w_uk, w_uv = kv_b.view(heads, nope + v_dim, lora).split([nope, v_dim], dim=1)
    q_nope, q_pe = torch.randn(len(lens), heads, nope), torch.randn(len(lens), heads, rope)
    scale = (nope + rope) ** -0.5
    cache, tables, seq_lens, _ = _mla_decode_inputs(
        lens, block_size, heads, lora + rope, torch.float32
    )

    want = torch.empty(len(lens), heads, v_dim)
    for i, n in enumerate(lens):
        kv_c, k_pe = torch.randn(n, lora), torch.randn(n, rope)
        slots = torch.arange(n)
        slots = tables[i, slots // block_size].long() * block_size + slots % block_size
        C.concat_and_cache_mla(kv_c, k_pe, cache, slots)
        k = torch.cat((torch.einsum("tl,hpl->htp", kv_c, w_uk), k_pe.expand(heads, n, rope)), -1)
        v = torch.einsum("tl,hvl->htv", kv_c, w_uv)
        q = torch.cat((q_nope[i], q_pe[i]), dim=-1)  # [heads, nope + rope]
        probs = (torch.einsum("hd,htd->ht", q, k) * scale).softmax(dim=-1)
        want[i] = torch.einsum("ht,htv->hv", probs, v)

    absorbed = torch.cat((torch.einsum("bhp,hpl->bhl", q_nope, w_uk), q_pe), dim=-1)
    for kernel in (C.paged_attention_mla, ops.paged_attention_mla):
        latent = torch.empty(len(lens), heads, lora)
        kernel(latent, absorbed, cache, lora, scale, tables, seq_lens)
        got = torch.einsum("bhl,hvl->bhv", latent, w_uv)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [96, 37])  # whole vectors, and a scalar tail
@pytest.mark.parametrize(
    "sizes", [[4, 0, 9, 0, 0, 13, 1], [0, 0, 40], [17], [2, 3, 1, 0, 5, 4, 1]]
)  # tiles of 1-4 rows; bf16 groups of more than 4 rows take ATen's GEMM
@pytest.mark.parametrize("channels", [72, 70])  # 70: a block ends inside a tile of 4
def test_grouped_matmul_empty_groups_and_rows_past_the_last_group(
    dtype: torch.dtype, sizes: list[int], width: int, channels: int
) -> None:
    rows = 40
    torch.manual_seed(len(sizes))
    x = torch.randn(rows, width).to(dtype)
    weight = (torch.randn(len(sizes), channels, width) * width**-0.5).to(dtype)
    group_ends = torch.tensor(sizes).cumsum(0)
    got = torch.full((rows, channels), 7.0, dtype=dtype)
    want = got.clone()
    C.grouped_matmul(got, x, weight, group_ends)
    ops.grouped_matmul(want, x, weight, group_ends)
    _close(got, want)
    expert = torch.searchsorted(group_ends, torch.arange(rows), right=True)
    used = int(group_ends[-1])
    rowwise = torch.einsum("mk,mok->mo", x[:used].float(), weight[expert[:used]].float())
    _close(got[:used], rowwise.to(dtype))
    assert bool((got[used:] == 7.0).all()), "rows past the last group end were written"


def test_grouped_matmul_refuses_decreasing_group_ends() -> None:
    out = torch.empty(8, 4)
    with pytest.raises(RuntimeError, match="grouped_matmul: group_ends must be non-decreasing"):
        C.grouped_matmul(out, torch.randn(8, 6), torch.randn(2, 4, 6), torch.tensor([5, 3]))


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
