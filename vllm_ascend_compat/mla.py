"""The MLA attention backend (DeepSeek's multi-head latent attention), both devices.

The cache holds one latent row per token: the compressed KV (``kv_lora_rank``) and,
after it, the decoupled rope key (``qk_rope_head_dim``), ``[num_blocks, block_size,
kv_lora_rank + qk_rope_head_dim]`` per layer: vLLM's own MLA layout, and the concatenated
key cache that ATB's MLA paged attention reads (``num_kv_heads`` 1, the value being the
first ``kv_lora_rank`` columns of the key).

Decodes attend in latent space with the absorbed projections (the query through W_UK,
the output through W_UV): one cached row serves every head. Prefills expand their
cached latent rows through ``kv_b_proj`` into per-head keys and values and run causal
attention over the prefix and the new tokens, so chunked prefill and prefix caching
read the same cache as decodes.

Who drives the split drifts: up to 0.15 vLLM's ``Attention(use_mla=True)``
calls ``forward`` with the whole step, and this impl writes the cache, absorbs and
splits itself; from 0.16, vLLM's ``MLAAttention`` layer writes through
``do_kv_cache_update``, absorbs with its own weights and calls ``forward_mha`` for the
prefill rows and ``forward_mqa`` for the decode rows (decodes first: the builder asks
for that order with ``reorder_batch_threshold``). Both paths share the kernels below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from vllm.forward_context import get_forward_context

from vllm_ascend_compat import ops
from vllm_ascend_compat.attention import (
    AscendAttentionBackend,
    AscendAttentionMetadata,
    AscendAttentionMetadataBuilder,
    AttentionType,
    bind_impl_arguments,
)

try:  # 0.14+
    from vllm.v1.attention.backend import MLAAttentionImpl
except ImportError:
    from vllm.attention.backends.abstract import MLAAttentionImpl


def _no_attention_metadata() -> bool:
    """A dummy or profiling forward: vLLM sets no attention metadata for it."""
    return get_forward_context().attn_metadata is None


# vLLM's MLA layer absorbs the projections and splits the step itself from the release
# whose MLAAttentionImpl declares forward_mqa; before, impl.forward gets the whole step.
LAYER_SPLITS_STEP = hasattr(MLAAttentionImpl, "forward_mqa")


@dataclass
class AscendMLADecode:
    """The leading decode requests, as vLLM's MLA layer expects to find them."""

    block_table: torch.Tensor  # [num_decodes, max_blocks]
    seq_lens: torch.Tensor  # [num_decodes], host int32


@dataclass
class AscendMLAMetadata(AscendAttentionMetadata):
    num_decodes: int  # the leading requests with one new token each
    num_decode_tokens: int
    num_prefills: int  # every request after them
    decode: AscendMLADecode | None


class AscendMLAMetadataBuilder(AscendAttentionMetadataBuilder):
    # Decodes first, so that vLLM's MLA layer (which slices the step in two) finds them there.
    reorder_batch_threshold: ClassVar[int] = 1

    def build(self, *args: Any, **kwargs: Any) -> AscendMLAMetadata:
        meta = super().build(*args, **kwargs)
        starts = meta.query_start_loc
        num_reqs = len(starts) - 1
        num_decodes = next((r for r in range(num_reqs) if starts[r + 1] - starts[r] != 1), num_reqs)
        decode = None
        if num_decodes:
            decode = AscendMLADecode(
                block_table=meta.block_table[:num_decodes],
                seq_lens=torch.tensor(meta.seq_lens_list[:num_decodes], dtype=torch.int32),
            )
        return AscendMLAMetadata(
            **vars(meta),
            num_decodes=num_decodes,
            num_decode_tokens=num_decodes,
            num_prefills=num_reqs - num_decodes,
            decode=decode,
        )


class AscendMLABackend(AscendAttentionBackend):
    @staticmethod
    def get_name() -> str:
        return "ASCEND_MLA"

    @staticmethod
    def get_impl_cls() -> type[AscendMLAImpl]:
        return AscendMLAImpl

    @staticmethod
    def get_metadata_cls() -> type[AscendMLAMetadata]:
        return AscendMLAMetadata

    @staticmethod
    def get_builder_cls() -> type[AscendMLAMetadataBuilder]:
        return AscendMLAMetadataBuilder

    @staticmethod
    def get_kv_cache_shape(
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_size: int,
        cache_dtype_str: str = "auto",
    ) -> tuple[int, ...]:
        return (num_blocks, block_size, head_size)

    @classmethod
    def is_mla(cls) -> bool:
        return True


class AscendMLAImpl(MLAAttentionImpl):
    # What vLLM's MLA layer reads of an impl (0.16+): no decode context parallelism, no
    # quantized query, no sparse attention.
    dcp_world_size: int = 1
    supports_quant_query_input: bool = False
    can_return_lse_for_decode: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        params = bind_impl_arguments(args, kwargs)
        self.num_heads = params.pop("num_heads")
        self.scale = float(params.pop("scale"))
        self.kv_lora_rank = params.pop("kv_lora_rank")
        self.qk_nope_head_dim = params.pop("qk_nope_head_dim")
        self.qk_rope_head_dim = params.pop("qk_rope_head_dim")
        self.v_head_dim = params.pop("v_head_dim")
        self.kv_b_proj = params.pop("kv_b_proj")
        # its weight is split into W_UK and W_UV after loading: kept as loaded, not prepacked
        # for the device (patches/linear_weights)
        self.kv_b_proj.weight_read_dense = True
        for implied in ("head_size", "num_kv_heads", "q_lora_rank", "qk_head_dim"):
            params.pop(implied, None)
        attn_type = params.pop("attn_type")
        kv_cache_dtype = params.pop("kv_cache_dtype")
        named = [k for k, v in params.items() if v]  # every feature left is unsupported
        if named or attn_type != AttentionType.DECODER or kv_cache_dtype != "auto":
            raise NotImplementedError(
                f"vllm-ascend-compat MLA attention supports dense causal decoder attention "
                f"with an unquantized cache; this layer asks for "
                f"{named or [attn_type, kv_cache_dtype]}"
            )
        self.W_UK_T: torch.Tensor | None = None  # [heads, qk_nope, latent], old lines only
        self.W_UV: torch.Tensor | None = None  # [heads, latent, v_head]

    def process_weights_after_loading(self, act_dtype: torch.dtype) -> None:
        """Where this impl absorbs (releases before the MLA layer), split ``kv_b_proj``
        into W_UK and W_UV once; later the layer keeps its own copies."""
        if LAYER_SPLITS_STEP:
            return
        weight = self.kv_b_proj.weight
        if not weight.is_floating_point():
            raise NotImplementedError(
                "vllm-ascend-compat MLA attention needs an unquantized kv_b_proj"
            )
        per_head = weight.T.to(act_dtype).view(
            self.kv_lora_rank, self.num_heads, self.qk_nope_head_dim + self.v_head_dim
        )
        w_uk, w_uv = per_head.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        self.W_UK_T = w_uk.permute(1, 2, 0).contiguous()
        self.W_UV = w_uv.transpose(0, 1).contiguous()

    # --- the pieces vLLM's MLA layer calls (0.16+) ---------------------------------------

    def do_kv_cache_update(
        self,
        kv_c_normed: torch.Tensor,
        k_pe: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor | None,
        kv_cache_dtype: str = "auto",
        k_scale: torch.Tensor | None = None,
        skip_scale: bool = False,
    ) -> None:
        # No cache yet (profiling), or a dummy run: vLLM's layer (0.16+) writes on every
        # forward, and a dummy run's slots are a stale buffer, repeats that ATB refuses.
        if slot_mapping is None or kv_cache.numel() == 0 or _no_attention_metadata():
            return
        torch.ops._C_ascend_compat.concat_and_cache_mla(kv_c_normed, k_pe, kv_cache, slot_mapping)

    def forward_mha(
        self,
        q: torch.Tensor,
        kv_c_normed: torch.Tensor,
        k_pe: torch.Tensor,
        kv_c_and_k_pe_cache: torch.Tensor,
        attn_metadata: AscendMLAMetadata,
        k_scale: torch.Tensor,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
    ) -> None:
        """The prefill rows: every request after the leading decodes, q sliced from them."""
        meta = attn_metadata
        out = output.view(-1, self.num_heads, self.v_head_dim)
        first = meta.query_start_loc[meta.num_decodes]
        requests = range(meta.num_decodes, len(meta.seq_lens_list))
        self._prefill(q, kv_c_and_k_pe_cache, meta, out, requests, first)

    def forward_mqa(
        self,
        q: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        kv_c_and_k_pe_cache: torch.Tensor,
        attn_metadata: AscendMLAMetadata,
        layer: Any,
    ) -> tuple[torch.Tensor, None]:
        """The leading decode rows, already absorbed: ``[decodes, heads, latent]`` out."""
        if isinstance(q, tuple):
            q = torch.cat(q, dim=-1)
        decode = attn_metadata.decode
        assert decode is not None
        return self._latent_decode(
            q, kv_c_and_k_pe_cache, decode.block_table, decode.seq_lens
        ), None

    # --- the whole step, where vLLM's Attention calls the impl (up to 0.15) -------------

    def forward(
        self,
        layer: Any,
        hidden_states_or_cq: torch.Tensor,  # vLLM's name for it: the query, rope applied
        kv_c_normed: torch.Tensor,
        k_pe: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AscendMLAMetadata | None,
        output: torch.Tensor | None = None,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert output is not None, "the backend accepts an output buffer"
        if attn_metadata is None:  # profiling run: no cache yet
            return output.fill_(0)
        meta = attn_metadata
        n = meta.num_actual_tokens
        q = hidden_states_or_cq[:n]
        out = output[:n].view(n, self.num_heads, self.v_head_dim)
        self.do_kv_cache_update(kv_c_normed[:n], k_pe[:n], kv_cache, meta.slot_mapping)
        if meta.decode_tokens.numel():
            rows = q if meta.decode_only else q[meta.decode_tokens]
            table = meta.block_table if meta.decode_only else meta.block_table[meta.decode_requests]
            assert self.W_UK_T is not None and self.W_UV is not None
            q_nope, q_pe = rows.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
            absorbed = torch.cat(
                (torch.bmm(q_nope.transpose(0, 1), self.W_UK_T).transpose(0, 1), q_pe), dim=-1
            )
            latent = self._latent_decode(absorbed, kv_cache, table, meta.decode_seq_lens)
            decoded = torch.bmm(latent.transpose(0, 1), self.W_UV).transpose(0, 1)
            if meta.decode_only:
                out.copy_(decoded)
            else:
                out[meta.decode_tokens] = decoded
        if meta.prefill_requests:
            self._prefill(q, kv_cache, meta, out, meta.prefill_requests, 0)
        return output

    # --- the kernels' callers ------------------------------------------------------------

    def _latent_decode(
        self,
        q: torch.Tensor,
        kv_cache: torch.Tensor,
        block_table: torch.Tensor,
        seq_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Absorbed queries ``[decodes, heads, latent + rope]`` against their cached rows:
        the attended latent ``[decodes, heads, latent]``."""
        out = q.new_empty(q.shape[0], self.num_heads, self.kv_lora_rank)
        torch.ops._C_ascend_compat.paged_attention_mla(
            out, q, kv_cache, self.kv_lora_rank, self.scale, block_table, seq_lens
        )
        return out

    def _prefill(
        self,
        q: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AscendMLAMetadata,
        out: torch.Tensor,
        requests: Any,
        first: int,
    ) -> None:
        """Causal attention of each request's new tokens over its cached prefix and
        themselves, with the cached latent rows expanded into per-head keys and values.
        ``q`` and ``out`` start at the step's token ``first``."""
        latent_dim = self.kv_lora_rank
        for r in requests:
            start, end = meta.query_start_loc[r] - first, meta.query_start_loc[r + 1] - first
            seq_len = meta.seq_lens_list[r]
            rows = ops.gather_kv(kv_cache, meta.block_table[r], seq_len)
            kv = self.kv_b_proj(rows[:, :latent_dim].to(q.dtype))[0]
            kv = kv.view(seq_len, self.num_heads, self.qk_nope_head_dim + self.v_head_dim)
            k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
            k_pe = rows[:, None, latent_dim:].to(q.dtype).expand(-1, self.num_heads, -1)
            k = torch.cat((k_nope, k_pe), dim=-1)
            context = seq_len - (end - start)
            mask = torch.ones(end - start, seq_len, dtype=torch.bool).tril(context)
            attended = torch.nn.functional.scaled_dot_product_attention(
                q[start:end].transpose(0, 1)[None],
                k.transpose(0, 1)[None],
                v.transpose(0, 1)[None],
                attn_mask=mask.to(q.device),
                scale=self.scale,
            )[0]
            out[start:end] = attended.transpose(0, 1)
