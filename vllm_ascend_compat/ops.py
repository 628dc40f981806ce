"""The plugin's custom ops: one torch library namespace, called as ``torch.ops._C_ascend_compat``.

Schemas are declared once, here, with a Meta kernel for tracing. The C++ kernels
in ``csrc/`` (CPU, and PrivateUse1 handing the work to torch_npu) are built on
first use against the installed torch and cached (see :func:`build_dir`). The
pure-torch kernels below are the reference the compiled ones are tested against,
and the CPU fallback when no compiler is available.

KV cache layout, both devices: key and value caches of shape
``[num_blocks, block_size, num_kv_heads, head_size]``; slot ``s`` is row
``s % block_size`` of block ``s // block_size``; a negative slot is padding. MLA's
latent cache is ``[num_blocks, block_size, kv_lora_rank + rope_dim]``, one row per token
(the compressed KV, then the rope key), with the same slots; its blocks may be strided.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vllm_ascend_compat import activation, envs
from vllm_ascend_compat.log import logger

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
    "concat_and_cache_mla": (
        "concat_and_cache_mla(Tensor kv_c, Tensor k_pe, Tensor(a!) kv_cache, "
        "Tensor slot_mapping) -> ()"
    ),
    "paged_attention_mla": (
        "paged_attention_mla(Tensor(a!) out, Tensor query, Tensor kv_cache, int kv_lora_rank, "
        "float scale, Tensor block_tables, Tensor seq_lens) -> ()"
    ),
    "grouped_matmul": (
        "grouped_matmul(Tensor(a!) out, Tensor input, Tensor weight, Tensor group_ends) -> ()"
    ),
    "int8_weight_linear": (
        "int8_weight_linear(Tensor(a!) out, Tensor input, Tensor weight, Tensor scale, "
        "Tensor? offset, Tensor? bias) -> ()"
    ),
    "quantize_int8": (
        "quantize_int8(Tensor(a!) out, Tensor input, Tensor scale, Tensor offset) -> ()"
    ),
    "dynamic_quant_int8": (
        "dynamic_quant_int8(Tensor(a!) out, Tensor(b!) scale, Tensor input) -> ()"
    ),
    "int8_linear": (
        "int8_linear(Tensor(a!) out, Tensor input, Tensor weight, Tensor deq_scale, "
        "Tensor? pertoken_scale, Tensor? bias) -> ()"
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
    """The first ``length`` cached rows of one sequence: ``[length, kv_heads, head]``, or
    ``[length, row]`` from MLA's latent cache."""
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


def concat_and_cache_mla(
    kv_c: torch.Tensor, k_pe: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """MLA's cache write: a token's row is its compressed KV, then its rope key. Only the
    first ``len(slot_mapping)`` tokens have slots (vLLM pads the batch past them)."""
    tokens = slot_mapping.numel()
    valid = slot_mapping >= 0
    slots = slot_mapping[valid].long()
    rows = torch.cat((kv_c[:tokens], k_pe[:tokens].flatten(1)), dim=-1)[valid]
    block_size = kv_cache.shape[1]
    kv_cache[slots // block_size, slots % block_size] = rows  # in place, whatever the strides


def paged_attention_mla(
    out: torch.Tensor,
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    kv_lora_rank: int,
    scale: float,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
) -> None:
    """MLA decode with the projections absorbed: every query head attends to the one latent
    KV head, keys whole cached rows, values their first ``kv_lora_rank`` columns."""
    for i, length in enumerate(seq_lens.tolist()):
        kv = gather_kv(kv_cache, block_tables[i], length).float()  # [length, L + R]
        probs = (query[i].float() @ kv.T * scale).softmax(dim=-1)  # [heads, length]
        out[i] = (probs @ kv[:, :kv_lora_rank]).to(out.dtype)


def grouped_matmul(
    out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, group_ends: torch.Tensor
) -> None:
    """MoE experts over tokens sorted by expert: expert ``e`` owns input rows
    ``group_ends[e - 1]:group_ends[e]`` and multiplies them by its ``[out, in]`` weight.
    Rows past the last group end are not written."""
    start = 0
    for expert, end in enumerate(group_ends.tolist()):
        out[start:end] = input[start:end] @ weight[expert].T
        start = end


def int8_weight_linear(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> None:
    """W8A16 linear: ``input @ ((weight + offset) * scale).T + bias``; ``weight`` int8
    ``[out, in]``, ``scale`` and ``offset`` one per output channel, dequantized to
    ``input``'s dtype."""
    w = weight.float()
    if offset is not None:
        w = w + offset.float().reshape(-1, 1)
    dequantized = (w * scale.float().reshape(-1, 1)).to(input.dtype)
    out.copy_(torch.nn.functional.linear(input, dequantized, bias))


def _saturate(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).clamp(-128, 127).to(torch.int8)


def quantize_int8(
    out: torch.Tensor, input: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor
) -> None:
    """Static activation quantization: ``sat(round(input * scale + offset))``, ``scale``
    and ``offset`` broadcast along the last dimension (float32 arithmetic)."""
    out.copy_(_saturate(input.float() * scale.float() + offset.float()))


def dynamic_quant_int8(out: torch.Tensor, scale: torch.Tensor, input: torch.Tensor) -> None:
    """Per-token symmetric quantization: ``scale = max|row| / 127``, ``round(row / scale)``."""
    x = input.float()
    scale.copy_(x.abs().amax(dim=-1) / 127)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(-1)
    out.copy_(_saturate(x / safe))


def int8_linear(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    deq_scale: torch.Tensor,
    pertoken_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> None:
    """W8A8 matmul: int32 ``input @ weight.T`` (+ an int32 bias), times ``deq_scale`` per
    channel (and ``pertoken_scale`` per token), + a float bias."""
    acc = torch._int_mm(input, weight.t())
    int_bias = bias is not None and bias.dtype == torch.int32
    if int_bias:
        acc = acc + bias
    result = acc.float() * deq_scale.float()
    if pertoken_scale is not None:
        result = result * pertoken_scale.float().unsqueeze(-1)
    if bias is not None and not int_bias:
        result = result + bias.float()
    out.copy_(result)


# --- Registration -----------------------------------------------------------------------

REFERENCE: dict[str, Callable[..., None]] = {
    "rms_norm": rms_norm,
    "fused_add_rms_norm": fused_add_rms_norm,
    "rotary_embedding": rotary_embedding,
    "silu_and_mul": silu_and_mul,
    "reshape_and_cache": reshape_and_cache,
    "paged_attention": paged_attention,
    "concat_and_cache_mla": concat_and_cache_mla,
    "paged_attention_mla": paged_attention_mla,
    "grouped_matmul": grouped_matmul,
    "int8_weight_linear": int8_weight_linear,
    "quantize_int8": quantize_int8,
    "dynamic_quant_int8": dynamic_quant_int8,
    "int8_linear": int8_linear,
}
SOURCES = Path(__file__).with_name("csrc")

_library: torch.library.Library | None = None
_kernels = ""


def _no_op_meta(*args: Any) -> None:
    """Every op writes into its arguments and returns nothing: no shapes to infer."""


def openmp_flags() -> list[str]:
    """at::parallel_for is a header template: without OpenMP in the extension's own
    build it runs every kernel on one thread."""
    return ["-fopenmp"] if torch.backends.openmp.is_available() else []


def build_flags() -> list[str]:
    """Compile for the vector width ATen itself dispatches to on this CPU, in parallel."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = {
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
        "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    }.get(capability, [])
    defines = [f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"] if flags else []
    return ["-O3", *flags, *defines, *openmp_flags()]


def _sources() -> list[Path]:
    """The C++ sources and the header they share."""
    return sorted([*SOURCES.glob("*.cpp"), *SOURCES.glob("*.h")])


def build_dir() -> Path:
    """One build per torch install (its headers' path is in the build commands), CPU
    capability and source text."""
    digest = hashlib.sha256()
    for part in (torch.__version__, str(Path(torch.__file__).parent), *build_flags()):
        digest.update(part.encode())
    for source in _sources():
        digest.update(source.read_bytes())
    return envs.cache_dir() / "ops" / f"torch-{torch.__version__}-{digest.hexdigest()[:16]}"


def _load_compiled() -> None:
    """Build (once, cached) and load the C++ kernels: CPU and PrivateUse1."""
    from torch.utils import cpp_extension

    directory = build_dir()
    sources = directory / "src"
    if not sources.is_dir():  # copies keep their mtimes, so reinstalls do not rebuild
        staging = directory / f"src.{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        for source in _sources():
            shutil.copy(source, staging / source.name)
        try:
            staging.rename(sources)
        except OSError:  # another process (a TP worker, a test worker) staged them first
            shutil.rmtree(staging)
    cpp_extension.load(
        name="_C_ascend_compat_kernels",
        sources=[str(p) for p in sorted(sources.glob("*.cpp"))],
        extra_cflags=build_flags(),
        extra_ldflags=openmp_flags(),  # resolves to the libgomp torch has already loaded
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )


def register() -> str:
    """Define the namespace once per process and back it with kernels.

    Returns "compiled" when the C++ kernels are loaded. When the build is not possible,
    the CPU ops run the pure-torch reference kernels ("reference", said once in the
    log); in NPU mode that is an error instead, since the NPU ops exist only compiled.
    """
    global _library, _kernels
    if _library is not None:
        return _kernels
    _library = torch.library.Library(NAMESPACE, "DEF")
    for name, schema in SCHEMAS.items():
        _library.define(schema)
        _library.impl(name, _no_op_meta, "Meta")
    try:
        _load_compiled()
        _kernels = "compiled"
    except Exception as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if activation.decide().device == "npu":
            _library = None  # undefines the namespace: a retry builds again
            raise RuntimeError(
                f"vllm-ascend-compat: building the C++ ops failed ({reason}). On an NPU they "
                "are required: the NPU ops exist only in the compiled build, and there is no "
                "fallback. Install a C++ compiler (c++, or set $CXX) and ninja; the "
                f"compiler's output is in the error above, the build in {build_dir()}."
            ) from err
        for name, kernel in REFERENCE.items():
            _library.impl(name, kernel, "CPU")
        _kernels = "reference"
        logger.warning(
            "vllm-ascend-compat: C++ ops not available (%s); CPU ops use the pure-torch "
            "reference kernels and NPU ops are missing",
            reason,
        )
    return _kernels
