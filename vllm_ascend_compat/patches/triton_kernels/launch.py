"""Torch stand-ins for Triton kernels: shared by the release-keyed modules (no vLLM imports)."""

import inspect
from collections.abc import Callable

import torch


class GridLaunch:
    """``kernel[grid](*args)`` calls ``fn(grid, *args)``, as a Triton launch would."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        return lambda *args, **kwargs: self.fn(grid, *args, **kwargs)


class KernelLaunch(GridLaunch):
    """A :class:`GridLaunch` that also names the kernel's parameters, as a Triton kernel
    does: vLLM's warm-up dispatchers (0.30+) bind their inputs to those names."""

    def __init__(self, fn: Callable[..., None]) -> None:
        super().__init__(fn)
        params = inspect.signature(fn).parameters.values()
        names = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        self.arg_names = names[1:]  # without the grid


def slot_mapping(
    num_reqs: int,
    num_tokens: int,
    max_num_tokens: int,
    query_start_loc: torch.Tensor,
    positions: torch.Tensor,
    block_table: torch.Tensor,
    block_table_stride: int,
    block_size: int,
    slot_mapping: torch.Tensor,
    pad_id: int,
    kv_block_size: int | None = None,
    blocks_per_kv_block: int = 1,
) -> None:
    """Slot of every scheduled token: its block from the request's row, then its offset.

    ``kv_block_size`` (0.27+) is the KV-cache block, made of ``blocks_per_kv_block``
    kernel blocks of ``block_size``; before 0.27 both are the same block.
    """
    kv_block_size = kv_block_size or block_size
    # The request of each token by binary search over the request ends; not repeat_interleave,
    # whose CPU kernel wakes the thread pool even for a few tokens (~0.1 ms a step).
    ends = query_start_loc[1 : num_reqs + 1]
    tokens = torch.arange(num_tokens, dtype=ends.dtype, device=ends.device)
    request = torch.searchsorted(ends, tokens, right=True)
    pos = positions[:num_tokens]
    offset = pos % kv_block_size
    index = (pos // kv_block_size) * blocks_per_kv_block + offset // block_size
    blocks = block_table.view(-1, block_table_stride)[request, index].long()
    slot_mapping[:num_tokens] = blocks * block_size + offset % block_size
    slot_mapping[num_tokens:max_num_tokens] = pad_id


def no_context_parallel(world_size: int) -> None:
    if world_size != 1:
        raise NotImplementedError("vllm-ascend-compat: context parallelism is not supported")


def kv_blocks_kernel(
    grid: tuple[int, ...],
    num_tokens: int,  # the Triton kernel's own parameter names: 0.30's dispatcher binds by them
    max_num_tokens: int,
    query_start_loc_ptr: torch.Tensor,
    positions_ptr: torch.Tensor,
    block_table_ptr: torch.Tensor,
    block_table_stride: int,
    block_size: int,
    slot_mapping_ptr: torch.Tensor,
    KV_CACHE_BLOCK_SIZE: int,
    BLOCKS_PER_KV_BLOCK: int,
    TOTAL_CP_WORLD_SIZE: int,
    TOTAL_CP_RANK: int,
    CP_KV_CACHE_INTERLEAVE_SIZE: int,
    PAD_ID: int,
    BLOCK_SIZE: int,
) -> None:
    """0.26 to 0.31's kernel: a KV-cache block holds BLOCKS_PER_KV_BLOCK kernel blocks."""
    no_context_parallel(TOTAL_CP_WORLD_SIZE)
    slot_mapping(
        grid[0] - 1, num_tokens, max_num_tokens, query_start_loc_ptr, positions_ptr,
        block_table_ptr, block_table_stride, block_size, slot_mapping_ptr, PAD_ID,
        KV_CACHE_BLOCK_SIZE, BLOCKS_PER_KV_BLOCK,
    )  # fmt: skip
