"""The plugin's custom ops: one torch library namespace, called as ``torch.ops._C_ascend_compat``.

Schemas are declared once, here. Each op has a CPU kernel, a PrivateUse1 (NPU)
kernel that hands the work to torch_npu, and a Meta kernel for tracing. The CPU
kernels below are the pure-torch reference implementations; they also serve as
the oracle the compiled kernels are tested against.

KV cache layout, both devices: key and value caches of shape
``[num_blocks, block_size, num_kv_heads, head_size]``; slot ``s`` is row
``s % block_size`` of block ``s // block_size``; a negative slot is padding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

NAMESPACE = "_C_ascend_compat"

SCHEMAS = {
    "rms_norm": "rms_norm(Tensor(a!) out, Tensor input, Tensor weight, float epsilon) -> ()",
    "fused_add_rms_norm": (
        "fused_add_rms_norm(Tensor(a!) input, Tensor(b!) residual, Tensor weight, "
        "float epsilon) -> ()"
    ),
    "rotary_embedding": (
        "rotary_embedding(Tensor positions, Tensor(a!) query, Tensor(b!) key, int head_size, "
        "Tensor cos_sin_cache, bool is_neox) -> ()"
    ),
    "silu_and_mul": "silu_and_mul(Tensor(a!) out, Tensor input) -> ()",
    "reshape_and_cache": (
        "reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, "
        "Tensor(b!) value_cache, Tensor slot_mapping) -> ()"
    ),
    "paged_attention": (
        "paged_attention(Tensor(a!) out, Tensor query, Tensor key_cache, Tensor value_cache, "
        "int num_kv_heads, float scale, Tensor block_tables, Tensor seq_lens) -> ()"
    ),
}


# --- CPU reference kernels ---------------------------------------------------------------


def _normed(x: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    variance = x.float().pow(2).mean(dim=-1, keepdim=True)
    return (x.float() * torch.rsqrt(variance + epsilon)).to(x.dtype) * weight


def rms_norm(out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, epsilon: float) -> None:
    out.copy_(_normed(input, weight, epsilon))


def fused_add_rms_norm(
    input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, epsilon: float
) -> None:
    residual.copy_((input.float() + residual.float()).to(residual.dtype))
    input.copy_(_normed(residual, weight, epsilon))


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    cos, sin = cos_sin_cache.index_select(0, positions.flatten()).chunk(2, dim=-1)
    rotary_dim = cos_sin_cache.shape[-1]
    for tensor in (query, key):
        heads = tensor.view(positions.numel(), -1, head_size)
        rot = heads[..., :rotary_dim]
        if is_neox:
            x1, x2 = rot.float().chunk(2, dim=-1)
            c, s = cos.unsqueeze(1), sin.unsqueeze(1)
            rot.copy_(torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1))
        else:
            x1, x2 = rot.float()[..., 0::2], rot.float()[..., 1::2]
            c, s = cos.unsqueeze(1), sin.unsqueeze(1)
            rot.copy_(torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2))


def silu_and_mul(out: torch.Tensor, input: torch.Tensor) -> None:
    gate, up = input.chunk(2, dim=-1)
    out.copy_(torch.nn.functional.silu(gate) * up)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    num_kv_heads, head_size = key_cache.shape[2:]
    key_cache.view(-1, num_kv_heads, head_size)[slots] = key[valid].to(key_cache.dtype)
    value_cache.view(-1, num_kv_heads, head_size)[slots] = value[valid].to(value_cache.dtype)


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` cached rows of one sequence, ``[length, kv_heads, head]``."""
    block_size = cache.shape[1]
    blocks = block_table[: (length + block_size - 1) // block_size]
    return cache.index_select(0, blocks).flatten(0, 1)[:length]


def paged_attention(
    out: torch.Tensor,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    num_kv_heads: int,
    scale: float,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
) -> None:
    """Decode attention: one query token per sequence against its cached tokens."""
    group = query.shape[1] // num_kv_heads
    for i, length in enumerate(seq_lens.tolist()):
        k = gather_kv(key_cache, block_tables[i], length).float()
        v = gather_kv(value_cache, block_tables[i], length).float()
        q = query[i].float().view(num_kv_heads, group, -1)  # [kv_heads, group, head]
        scores = torch.einsum("hgd,lhd->hgl", q, k) * scale
        probs = scores.softmax(dim=-1)
        out[i] = torch.einsum("hgl,lhd->hgd", probs, v).reshape(out.shape[1:]).to(out.dtype)


# --- NPU kernels: torch_npu does the work --------------------------------------------------


def _npu() -> Any:
    import torch_npu

    return torch_npu


def rms_norm_npu(
    out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, epsilon: float
) -> None:
    out.copy_(_npu().npu_rms_norm(input, weight, epsilon=epsilon)[0])


def fused_add_rms_norm_npu(
    input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, epsilon: float
) -> None:
    normed, _, added = _npu().npu_add_rms_norm(input, residual, weight, epsilon=epsilon)
    residual.copy_(added)
    input.copy_(normed)


def rotary_embedding_npu(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    _npu()._npu_rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)


def silu_and_mul_npu(out: torch.Tensor, input: torch.Tensor) -> None:
    out.copy_(_npu().npu_swiglu(input, dim=-1))


def reshape_and_cache_npu(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    _npu()._npu_reshape_and_cache(
        key=key, value=value, key_cache=key_cache, value_cache=value_cache,
        slot_indices=slot_mapping.to(torch.int32),
    )  # fmt: skip


def paged_attention_npu(
    out: torch.Tensor,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    num_kv_heads: int,
    scale: float,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
) -> None:
    _npu()._npu_paged_attention(
        query=query, key_cache=key_cache, value_cache=value_cache,
        num_kv_heads=num_kv_heads, num_heads=query.shape[1], scale_value=scale,
        block_table=block_tables.to(torch.int32), context_lens=seq_lens.to(torch.int32),
        out=out,
    )  # fmt: skip


# --- Registration -----------------------------------------------------------------------

REFERENCE: dict[str, Callable[..., None]] = {
    "rms_norm": rms_norm,
    "fused_add_rms_norm": fused_add_rms_norm,
    "rotary_embedding": rotary_embedding,
    "silu_and_mul": silu_and_mul,
    "reshape_and_cache": reshape_and_cache,
    "paged_attention": paged_attention,
}
NPU: dict[str, Callable[..., None]] = {
    "rms_norm": rms_norm_npu,
    "fused_add_rms_norm": fused_add_rms_norm_npu,
    "rotary_embedding": rotary_embedding_npu,
    "silu_and_mul": silu_and_mul_npu,
    "reshape_and_cache": reshape_and_cache_npu,
    "paged_attention": paged_attention_npu,
}

_library: torch.library.Library | None = None


def _no_op_meta(*args: Any) -> None:
    """Every op writes into its arguments and returns nothing: no shapes to infer."""


def register() -> str:
    """Define the namespace once per process; return which kernels back the CPU ops."""
    global _library
    if _library is not None:
        return "reference"
    _library = torch.library.Library(NAMESPACE, "DEF")
    for name, schema in SCHEMAS.items():
        _library.define(schema)
        _library.impl(name, REFERENCE[name], "CPU")
        _library.impl(name, NPU[name], "PrivateUse1")
        _library.impl(name, _no_op_meta, "Meta")
    return "reference"
