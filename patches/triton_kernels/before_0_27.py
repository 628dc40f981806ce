"""Slot mapping in torch for 0.23 to 0.26, launched like the Triton kernel it replaces."""

from collections.abc import Callable
from typing import Any

import torch


class GridLaunch:
    """``kernel[grid](*args)`` calls ``fn(grid, *args)``, as a Triton launch would."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        return lambda *args, **kwargs: self.fn(grid, *args, **kwargs)


def slot_mapping(
    grid: tuple[int, ...],
    num_tokens: int,
    max_num_tokens: int,
    query_start_loc: torch.Tensor,
    positions: torch.Tensor,
    block_table: torch.Tensor,
    block_table_stride: int,
    block_size: int,
    slot_mapping: torch.Tensor,
    TOTAL_CP_WORLD_SIZE: int,  # the Triton kernel's own parameter names
    TOTAL_CP_RANK: int,
    CP_KV_CACHE_INTERLEAVE_SIZE: int,
    PAD_ID: int,
    BLOCK_SIZE: int,
) -> None:
    if TOTAL_CP_WORLD_SIZE != 1:
        raise NotImplementedError("vllm-ascend-compat: context parallelism is not supported")
    num_reqs = grid[0] - 1  # the kernel's last program only pads
    starts = query_start_loc[: num_reqs + 1].long()
    request = torch.repeat_interleave(
        torch.arange(num_reqs, device=positions.device), starts[1:] - starts[:-1]
    )
    pos = positions[:num_tokens]
    blocks = block_table.view(-1, block_table_stride)[request, pos // block_size].long()
    slot_mapping[:num_tokens] = blocks * block_size + pos % block_size
    slot_mapping[num_tokens:max_num_tokens] = PAD_ID


def torch_slot_mapping(original: Any) -> GridLaunch:
    return GridLaunch(slot_mapping)
