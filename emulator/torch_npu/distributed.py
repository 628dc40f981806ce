"""The ``hccl`` process group of the EMULATED npu device: gloo over host aliases.

torch_npu registers HCCL, the collective library of Ascend NPUs, as torch.distributed's
``hccl`` backend for the ``npu`` device. Here it is a :class:`torch.distributed.ProcessGroup`
in Python that hands every npu tensor to a gloo process group as a CPU tensor over the same
host memory (``host_alias``), so each collective writes the npu tensor in place, as HCCL
does on the device, and returns gloo's own work (``wait`` is when the data is there).
CPU tensors go to gloo unchanged. It emulates what HCCL computes, not how: no HCCS links,
no HCCL algorithms or timing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .npu import _C

BACKEND = "hccl"


def _host(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor over ``tensor``'s memory (``tensor`` itself when it is on the CPU)."""
    return _C.host_alias(tensor)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """The host alias, flattened. HCCL (like NCCL) takes an all-gather output or a
    reduce-scatter input of any shape with world-size times the elements (vLLM stacks
    them, ``(world_size, *shape)``); gloo wants them concatenated along dim 0."""
    if not tensor.is_contiguous():
        raise RuntimeError("hccl (emulated): the tensors of a collective must be contiguous")
    return _host(tensor).view(-1)


def _hosts(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [_host(t) for t in tensors]


class EmulatedHccl(dist.ProcessGroup):
    """The collectives torch.distributed's Python API calls on a group, over gloo."""

    def __init__(self, store: Any, rank: int, size: int, timeout: timedelta) -> None:
        super().__init__(rank, size)
        self._gloo = dist.ProcessGroupGloo(store, rank, size, timeout)
        self._group_name = self._group_desc = ""

    # c10d's names. c10d keeps a group's name and description in its backends; a Python
    # group has none, so it keeps them itself
    def getBackendName(self) -> str:
        return BACKEND

    def getGroupName(self) -> str:
        return self._group_name

    def setGroupName(self, name: str) -> None:
        self._group_name = name

    def getGroupDesc(self) -> str:
        return self._group_desc

    def setGroupDesc(self, desc: str) -> None:
        self._group_desc = desc

    def name(self) -> str:
        return BACKEND

    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        return self._gloo.allreduce(_hosts(tensors), opts or dist.AllreduceOptions())

    def allgather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor],
                  opts: Any = None) -> Any:  # fmt: skip
        return self._gloo.allgather(
            [_hosts(out) for out in outputs], _hosts(inputs), opts or dist.AllgatherOptions()
        )

    def _allgather_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Any:
        return self._gloo._allgather_base(
            _flat(output), _flat(input), opts or dist.AllgatherOptions()
        )

    def _reduce_scatter_base(
        self, output: torch.Tensor, input: torch.Tensor, opts: Any = None
    ) -> Any:
        return self._gloo._reduce_scatter_base(
            _flat(output), _flat(input), opts or dist.ReduceScatterOptions()
        )

    def reduce_scatter(self, outputs: list[torch.Tensor], inputs: list[list[torch.Tensor]],
                       opts: Any = None) -> Any:  # fmt: skip
        return self._gloo.reduce_scatter(
            _hosts(outputs), [_hosts(i) for i in inputs], opts or dist.ReduceScatterOptions()
        )

    def broadcast(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        return self._gloo.broadcast(_hosts(tensors), opts or dist.BroadcastOptions())

    def gather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor],
               opts: Any = None) -> Any:  # fmt: skip
        return self._gloo.gather(
            [_hosts(out) for out in outputs], _hosts(inputs), opts or dist.GatherOptions()
        )

    def scatter(self, outputs: list[torch.Tensor], inputs: list[list[torch.Tensor]],
                opts: Any = None) -> Any:  # fmt: skip
        return self._gloo.scatter(
            _hosts(outputs), [_hosts(i) for i in inputs], opts or dist.ScatterOptions()
        )

    def alltoall_base(self, output: torch.Tensor, input: torch.Tensor, output_splits: list[int],
                      input_splits: list[int], opts: Any = None) -> Any:  # fmt: skip
        return self._gloo.alltoall_base(
            _host(output), _host(input), output_splits, input_splits,
            opts or dist.AllToAllOptions(),
        )  # fmt: skip

    def send(self, tensors: list[torch.Tensor], dst: int, tag: int = 0) -> Any:
        return self._gloo.send(_hosts(tensors), dst, tag)

    def recv(self, tensors: list[torch.Tensor], src: int, tag: int = 0) -> Any:
        return self._gloo.recv(_hosts(tensors), src, tag)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int = 0) -> Any:
        return self._gloo.recv_anysource(_hosts(tensors), tag)

    def reduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Any:
        return self._gloo.reduce(_hosts(tensors), opts or dist.ReduceOptions())

    def barrier(self, opts: Any = None) -> Any:
        return self._gloo.barrier(opts or dist.BarrierOptions())

    # torch 2.13 renamed three entry points; each torch of the window calls one name
    all_gather_single = _allgather_base
    reduce_scatter_single = _reduce_scatter_base
    all_to_all_single = alltoall_base


def register() -> None:
    """Make ``hccl`` a torch.distributed backend for the npu device, as torch_npu does."""
    if BACKEND not in dist.Backend.backend_list:
        dist.Backend.register_backend(BACKEND, EmulatedHccl, devices=["npu"])
