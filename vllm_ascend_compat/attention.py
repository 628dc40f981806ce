"""The V1 attention backend: a paged KV cache, mixed prefill and decode batches, GQA.

One backend for both devices. Cache writes and decode attention go through the
plugin's ops (``torch.ops._C_ascend_compat``), which reach torch_npu on an NPU and
the CPU kernels in CPU mode. Prefill (including chunked prefill on top of cached
prefixes) runs torch_npu's fused infer attention on an NPU and causal SDPA over
the gathered cache in CPU mode.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar

import torch

try:  # vLLM 0.14+: the V1 attention abstractions live in one module
    from vllm.v1.attention.backend import (
        AttentionBackend,
        AttentionImpl,
        AttentionLayer,
        AttentionMetadataBuilder,
        AttentionType,
        CommonAttentionMetadata,
    )
except ImportError:  # up to 0.13
    from vllm.attention.backends.abstract import (
        AttentionBackend,
        AttentionImpl,
        AttentionLayer,
        AttentionType,
    )

    try:  # 0.9.2 to 0.13
        from vllm.v1.attention.backends.utils import (
            AttentionMetadataBuilder,
            CommonAttentionMetadata,
        )
    except ImportError:  # 0.9.0 and 0.9.1: V1 metadata builders have no base class yet
        from vllm.v1.attention.backends.utils import CommonAttentionMetadata

        M = TypeVar("M")

        class AttentionMetadataBuilder(Generic[M]):  # type: ignore[no-redef]
            def reorder_batch(self, input_batch: Any, scheduler_output: Any) -> bool:
                return False


try:  # vLLM 0.32+: backends declare the physical KV-cache layouts they read
    from vllm.v1.kv_cache_layout import KVCacheLayout
except ImportError:
    KVCacheLayout = None

from vllm_ascend_compat import activation, device, ops

# torch_npu in NPU mode, imported once here rather than in every layer's forward; None in
# CPU mode, where nothing calls it.
torch_npu: Any = (
    importlib.import_module("torch_npu") if activation.decide().device == "npu" else None
)

# vLLM's name for a third-party backend: from 0.18 the layer looks the name up in
# AttentionBackendEnum, where only CUSTOM fits; older lines accept any name.
BACKEND_NAME = "CUSTOM"


def register() -> None:
    """Point vLLM's CUSTOM attention backend at this one, on lines with the registry."""
    try:
        from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend
    except ImportError:
        try:
            from vllm.attention.backends.registry import AttentionBackendEnum, register_backend
        except ImportError:
            return
    from vllm_ascend_compat.platform import ATTENTION_BACKEND

    register_backend(AttentionBackendEnum.CUSTOM, ATTENTION_BACKEND)


@dataclass
class AscendAttentionMetadata:
    num_actual_tokens: int
    slot_mapping: torch.Tensor  # [num_tokens], negative for padding
    block_table: torch.Tensor  # [num_reqs, max_blocks]
    seq_lens: torch.Tensor  # [num_reqs], cached plus new tokens
    query_start_loc: list[int]  # [num_reqs + 1], host copy
    seq_lens_list: list[int]  # host copy of seq_lens
    decode_requests: torch.Tensor  # requests with exactly one new token
    decode_tokens: torch.Tensor  # their token rows
    decode_seq_lens: torch.Tensor  # their seq_lens, host int32: ATB reads them as host data
    prefill_requests: list[int]  # requests with more than one new token
    decode_only: bool  # every request decodes: token rows are requests, in order
    causal_mask: torch.Tensor | None  # NPU prefill's fixed causal mask; None in CPU mode


class AscendAttentionMetadataBuilder(AttentionMetadataBuilder[AscendAttentionMetadata]):
    """Splits the step into decodes and prefills once, for every layer to reuse."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "__init__" in vars(AttentionMetadataBuilder):  # 0.10+: (spec, [layers,] config, device)
            super().__init__(*args, **kwargs)
            self.device = kwargs["device"] if "device" in kwargs else args[-1]  # not kept by 0.10.0
            self._block_table = None
        else:  # 0.9.x: (runner, spec, block_table); the builder copies the slots itself
            runner, _, self._block_table = args
            self.device = runner.device
        self._causal_mask = (
            _npu_causal_mask(self.device) if device.current().type == "npu" else None
        )

    def build(
        self,
        common_prefix_len: int,
        common_attn_metadata: CommonAttentionMetadata,
        fast_build: bool = False,
        num_reqs: int | None = None,
        num_actual_tokens: int | None = None,
        max_query_len: int | None = None,
    ) -> AscendAttentionMetadata:
        """Once per step. 0.9.0 and 0.9.1 pass the counts by keyword: their common
        metadata holds only the query starts and the sequence lengths."""
        m = common_attn_metadata
        if num_reqs is None or num_actual_tokens is None:
            num_reqs, n = m.num_reqs, m.num_actual_tokens
        else:
            n = num_actual_tokens
        if self._block_table is None:
            starts = m.query_start_loc_cpu[: num_reqs + 1]
            slot_mapping = m.slot_mapping[:n]
            block_table = m.block_table_tensor[:num_reqs]
        else:  # 0.9.x
            starts = m.query_start_loc[: num_reqs + 1].cpu()
            slots = self._block_table.slot_mapping
            slot_mapping = slots[:n].copy_(self._block_table.slot_mapping_cpu[:n])
            slots[n:].fill_(-1)
            block_table = self._block_table.get_device_tensor()[:num_reqs]
        query_lens = starts[1:] - starts[:-1]
        is_decode = query_lens == 1
        decode_requests = torch.nonzero(is_decode).flatten()
        prefill_requests = torch.nonzero(~is_decode).flatten().tolist()
        seq_lens_cpu = getattr(m, "seq_lens_cpu", None)  # absent in 0.9.x and 0.32+
        if seq_lens_cpu is None:
            seq_lens_cpu = m.seq_lens[:num_reqs].cpu()
        return AscendAttentionMetadata(
            num_actual_tokens=n,
            slot_mapping=slot_mapping,
            block_table=block_table,
            seq_lens=m.seq_lens[:num_reqs],
            query_start_loc=starts.tolist(),
            seq_lens_list=seq_lens_cpu[:num_reqs].tolist(),
            decode_requests=decode_requests.to(self.device),
            decode_tokens=starts[:-1][is_decode].to(self.device),
            decode_seq_lens=seq_lens_cpu[:num_reqs][is_decode].to(torch.int32),
            prefill_requests=prefill_requests,
            decode_only=num_reqs > 0 and not prefill_requests and n == num_reqs,
            causal_mask=self._causal_mask,
        )


class AscendAttentionBackend(AttentionBackend):
    accept_output_buffer: bool = True
    supported_dtypes: ClassVar[list[torch.dtype]] = device.model_dtypes()

    @staticmethod
    def get_name() -> str:
        return BACKEND_NAME

    @staticmethod
    def get_impl_cls() -> type[AscendAttentionImpl]:
        return AscendAttentionImpl

    @staticmethod
    def get_metadata_cls() -> type[AscendAttentionMetadata]:
        return AscendAttentionMetadata

    @staticmethod
    def get_builder_cls() -> type[AscendAttentionMetadataBuilder]:
        return AscendAttentionMetadataBuilder

    @staticmethod
    def get_kv_cache_shape(
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_size: int,
        cache_dtype_str: str = "auto",
    ) -> tuple[int, ...]:
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple[Any, ...]:
        """0.32+: layer-compact, so each layer's cache is one dense run (see split_kv_cache)."""
        return (KVCacheLayout.LBNHC,)

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec: Any = None) -> list[Any]:
        """On an NPU the one block size both fused kernels take (device.BLOCK_SIZE); in CPU
        mode any, as vLLM's default ``[MultipleOf(1)]`` says: a plain ``[1]`` would make
        vLLM (0.12+) split each cache block into kernel blocks of one token. 0.33+ re-picks
        an unchosen block size from this after the platform."""
        if device.current().type == "npu":
            return [device.BLOCK_SIZE]
        return AttentionBackend.get_supported_kernel_block_sizes()

    @classmethod
    def get_preferred_block_size(cls, default_block_size: int) -> int:
        """The plugin's default in both modes, not vLLM's 16 (0.33+)."""
        return device.BLOCK_SIZE

    @classmethod
    def get_supported_dtypes(cls) -> list[torch.dtype]:  # the hook's name up to 0.13
        return cls.supported_dtypes

    @staticmethod
    def use_cascade_attention(*args: Any, **kwargs: Any) -> bool:
        return False


def split_kv_cache(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value caches, each [num_blocks, block_size, num_kv_heads, head_size].

    Up to 0.31 vLLM allocates get_kv_cache_shape(): [2, blocks, ...]. From 0.32 it
    hands over a logical [blocks, kv_heads, block_size, 2 * head_size] view in the
    declared LBNHC layout, one dense run per layer; the kernels read the first half
    of that run as keys and the second half as values.
    """
    if kv_cache.dim() == 5:
        return kv_cache[0], kv_cache[1]
    dense = kv_cache.permute(0, 2, 1, 3)
    if not dense.is_contiguous():
        raise RuntimeError(
            f"vllm-ascend-compat needs a dense LBNHC KV cache per layer; got shape "
            f"{tuple(kv_cache.shape)} with strides {kv_cache.stride()}"
        )
    blocks, block_size, kv_heads, content = dense.shape
    key_cache, value_cache = dense.view(2, blocks, block_size, kv_heads, content // 2)
    return key_cache, value_cache


def bind_impl_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """An impl's constructor arguments by name, bound by the release's own AttentionImpl
    signature: its positional order drifts (0.9.2 passes ``blocksparse_params`` before
    the soft cap), and layers pass extra keywords the base does not declare (MLA's)."""
    signature = inspect.signature(AttentionImpl.__init__)
    extra = {k: v for k, v in kwargs.items() if k not in signature.parameters}
    declared = {k: v for k, v in kwargs.items() if k in signature.parameters}
    bound = signature.bind(None, *args, **declared)
    bound.apply_defaults()
    params = {**bound.arguments, **extra}
    del params["self"]
    return params


class AscendAttentionImpl(AttentionImpl[AscendAttentionMetadata]):
    supported_attn_types: ClassVar[tuple[str, ...]] = (AttentionType.DECODER,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        params = bind_impl_arguments(args, kwargs)
        num_heads, head_size, scale = (
            params.pop("num_heads"),
            params.pop("head_size"),
            params.pop("scale"),
        )
        num_kv_heads = params.pop("num_kv_heads")
        attn_type = params.pop("attn_type")
        kv_cache_dtype = params.pop("kv_cache_dtype")
        self.logits_soft_cap = params.pop("logits_soft_cap", None) or None  # 0 means none
        self.sliding_window = params.pop("sliding_window", None)
        named = [k for k, v in params.items() if v is not None]  # every feature left is unsupported
        if named or attn_type != AttentionType.DECODER or kv_cache_dtype != "auto":
            raise NotImplementedError(
                f"vllm-ascend-compat attention supports causal decoder attention with an "
                f"unquantized cache; this layer asks for {named or [attn_type, kv_cache_dtype]}"
            )
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads or num_heads
        on_npu = device.current().type == "npu"
        # The fused decode kernels have neither a window nor a soft cap: such layers attend
        # in torch for every request (CPU mode only, so far).
        self._fused_decode = not (self.logits_soft_cap or self.sliding_window)
        if on_npu and not self._fused_decode:
            raise NotImplementedError(
                "vllm-ascend-compat attention on an NPU supports neither sliding windows nor "
                "logit soft-capping yet"
            )
        self._prefill = self._prefill_npu if on_npu else self._prefill_torch

    def forward(
        self,
        layer: AttentionLayer,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AscendAttentionMetadata | None,
        output: torch.Tensor | None = None,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert output is not None, "the backend accepts an output buffer"
        if attn_metadata is None:  # profiling run: no cache yet
            return output.fill_(0)
        n = attn_metadata.num_actual_tokens
        query = query[:n].view(n, self.num_heads, self.head_size)
        key = key[:n].view(n, self.num_kv_heads, self.head_size)
        value = value[:n].view(n, self.num_kv_heads, self.head_size)
        out = output[:n].view(n, self.num_heads, self.head_size)
        key_cache, value_cache = split_kv_cache(kv_cache)
        torch.ops._C_ascend_compat.reshape_and_cache(
            key, value, key_cache, value_cache, attn_metadata.slot_mapping
        )
        per_request = attn_metadata.prefill_requests  # attended one by one in _prefill
        if not self._fused_decode:
            per_request = list(range(len(attn_metadata.seq_lens_list)))
        elif attn_metadata.decode_tokens.numel():
            meta = attn_metadata
            if meta.decode_only:  # the common step: the kernel reads and writes in place
                q, table, decoded = query, meta.block_table, out
            else:
                q, table = query[meta.decode_tokens], meta.block_table[meta.decode_requests]
                decoded = torch.empty_like(q)
            torch.ops._C_ascend_compat.paged_attention(
                decoded, q, key_cache, value_cache, self.num_kv_heads, self.scale, table,
                meta.decode_seq_lens,
            )  # fmt: skip
            if not meta.decode_only:
                out[meta.decode_tokens] = decoded
        if per_request:
            self._prefill(query, key_cache, value_cache, attn_metadata, out, per_request)
        return output

    def _prefill_torch(
        self,
        query: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        meta: AscendAttentionMetadata,
        out: torch.Tensor,
        requests: list[int],
    ) -> None:
        """Causal attention of each request's new tokens over its cached prefix and themselves."""
        for r in requests:
            start, end = meta.query_start_loc[r], meta.query_start_loc[r + 1]
            seq_len = meta.seq_lens_list[r]
            k = ops.gather_kv(key_cache, meta.block_table[r], seq_len).transpose(0, 1)
            v = ops.gather_kv(value_cache, meta.block_table[r], seq_len).transpose(0, 1)
            q = query[start:end].transpose(0, 1)
            context = seq_len - (end - start)
            rows = torch.arange(end - start).unsqueeze(1) + context
            keys = torch.arange(seq_len).unsqueeze(0)
            mask = keys <= rows
            if self.sliding_window:  # the token itself and the window - 1 before it
                mask &= keys > rows - self.sliding_window
            k, v, mask = k.to(q.dtype), v.to(q.dtype), mask.to(q.device)
            if self.logits_soft_cap:
                attended = self._soft_capped(q, k, v, mask)
            else:  # batched 4-D: CPU SDPA's flash kernel takes it, 3-D falls back to math
                attended = torch.nn.functional.scaled_dot_product_attention(
                    q[None], k[None], v[None], attn_mask=mask, scale=self.scale, enable_gqa=True
                )[0]
            out[start:end] = attended.transpose(0, 1)

    def _soft_capped(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention with Gemma-2's ``cap * tanh(scores / cap)``, which SDPA cannot apply."""
        group = q.shape[0] // k.shape[0]
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        scores = torch.matmul(q, k.transpose(1, 2)) * self.scale
        cap = self.logits_soft_cap
        scores = (torch.tanh(scores / cap) * cap).masked_fill(~mask, float("-inf"))
        return torch.matmul(scores.softmax(dim=-1), v)

    def _prefill_npu(
        self,
        query: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        meta: AscendAttentionMetadata,
        out: torch.Tensor,
        requests: list[int],
    ) -> None:
        """torch_npu's fused infer attention over the paged cache, one request at a time.

        It takes contiguous tensors only, and vLLM's query is a column slice of its qkv
        projection: each request's rows are copied out (its own rows, not the batch's)."""
        block_size = key_cache.shape[1]
        for r in requests:
            start, end = meta.query_start_loc[r], meta.query_start_loc[r + 1]
            attended, _ = torch_npu.npu_fused_infer_attention_score(
                query[start:end].contiguous(),
                key_cache.flatten(2),
                value_cache.flatten(2),
                atten_mask=meta.causal_mask,
                block_table=meta.block_table[r : r + 1],
                actual_seq_lengths=[end - start],
                actual_seq_lengths_kv=[meta.seq_lens_list[r]],
                num_heads=self.num_heads,
                num_key_value_heads=self.num_kv_heads,
                scale=self.scale,
                input_layout="TND",
                block_size=block_size,
                sparse_mode=3,
            )
            out[start:end] = attended


@cache
def _npu_causal_mask(on: torch.device) -> torch.Tensor:
    """The fixed 2048 x 2048 upper-triangular mask that sparse_mode=3 expects (4 MiB): built
    once per device and shared by every builder, step, request and layer. It is boolean
    whatever the model's dtype, so one per device serves them all."""
    return torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device=on), diagonal=1)
