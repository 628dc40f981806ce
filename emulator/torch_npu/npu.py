"""``torch.npu`` of the EMULATED npu device: device, memory, stream and event calls.

An emulator of the device for tests, not an Ascend NPU: tensors live in host memory,
operators run on the CPU kernels, streams and events are synchronous (work is done when it
is issued), and the memory figures count this process's npu tensors against a fixed
emulated total. Nothing here knows the real device's numerics or timing, and nothing here
ran on Ascend hardware.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import torch

from . import _build

_C: Any = _build.load()

#: What :func:`mem_get_info` and :func:`get_device_properties` report as each device's
#: memory (the extension's constant, which torch.accelerator reports too). The host has no
#: such limit; allocations beyond it are not refused.
TOTAL_MEMORY = int(_C.total_memory())
DEVICE_NAME = "Emulated NPU (host memory)"

DeviceLike: TypeAlias = torch.device | str | int | None


def _index(device: DeviceLike = None) -> int:
    """The device index ``device`` names; the current device for ``None`` or no index."""
    if device is None:
        return current_device()
    if isinstance(device, int):
        return device
    named: torch.device = torch.device(device)
    if named.type != "npu":
        raise ValueError(f"expected an npu device, got {named}")
    return current_device() if named.index is None else int(named.index)


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def init() -> None:
    """Nothing to initialize: the emulated devices exist once the extension loads."""


def device_count() -> int:
    """The emulated device count (``VLLM_ASCEND_COMPAT_EMULATED_NPU_DEVICES``, default 2)."""
    return int(_C.device_count())


def current_device() -> int:
    return int(_C.current_device())


def set_device(device: DeviceLike) -> None:
    _C.set_device(_index(device))


class device:  # torch.cuda.device's name
    """Context manager that makes ``device`` current, and restores the previous one."""

    def __init__(self, device: DeviceLike) -> None:
        self.index = _index(device)
        self.previous = -1

    def __enter__(self) -> None:
        self.previous = current_device()
        set_device(self.index)

    def __exit__(self, *exc: object) -> None:
        set_device(self.previous)


def synchronize(device: DeviceLike = None) -> None:
    """Returns at once: the emulator has finished all work when it is issued."""
    _check(_index(device))


def get_device_name(device: DeviceLike = None) -> str:
    _check(_index(device))
    return DEVICE_NAME


@dataclasses.dataclass(frozen=True)
class DeviceProperties:
    name: str
    total_memory: int


def get_device_properties(device: DeviceLike = None) -> DeviceProperties:
    _check(_index(device))
    return DeviceProperties(name=DEVICE_NAME, total_memory=TOTAL_MEMORY)


def _check(index: int) -> None:
    if not 0 <= index < device_count():
        raise RuntimeError(f"invalid npu device index {index}: {device_count()} device(s)")


# --- memory ---


def memory_allocated(device: DeviceLike = None) -> int:
    """Bytes held by npu tensors on ``device`` in this process."""
    return int(_C.memory_allocated(_index(device)))


def max_memory_allocated(device: DeviceLike = None) -> int:
    """The peak of :func:`memory_allocated` since start or the last reset."""
    return int(_C.max_memory_allocated(_index(device)))


def reset_peak_memory_stats(device: DeviceLike = None) -> None:
    _C.reset_peak_memory_stats(_index(device))


def memory_reserved(device: DeviceLike = None) -> int:
    """The same as :func:`memory_allocated`: the emulator caches no blocks."""
    return memory_allocated(device)


def empty_cache() -> None:
    """Nothing to release: freed npu memory goes straight back to the host."""


def mem_get_info(device: DeviceLike = None) -> tuple[int, int]:
    """``(free, total)``: :data:`TOTAL_MEMORY` less this process's npu tensors."""
    used = memory_allocated(device)
    return max(TOTAL_MEMORY - used, 0), TOTAL_MEMORY


# --- random numbers ---

#: Each device's default generator: random ops on the device that are given no generator
#: draw from it (it wraps a CPU generator, which the CPU kernels use).
default_generators: tuple[torch.Generator, ...] = tuple(
    _C.default_generator(i) for i in range(int(_C.device_count()))
)


def manual_seed(seed: int) -> None:
    default_generators[current_device()].manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    for generator in default_generators:
        generator.manual_seed(seed)


def seed() -> None:
    default_generators[current_device()].seed()


def initial_seed() -> int:
    return int(default_generators[current_device()].initial_seed())


def get_rng_state(device: DeviceLike = None) -> torch.Tensor:
    return default_generators[_index(device)].get_state()


def set_rng_state(new_state: torch.Tensor, device: DeviceLike = None) -> None:
    default_generators[_index(device)].set_state(new_state)


def _is_in_bad_fork() -> bool:
    """torch.manual_seed asks; the emulator keeps no device state a fork could break."""
    return False


# --- streams and events: synchronous, so always complete ---


class Stream(torch.Stream):
    """An npu stream. The emulator runs work when it is issued, so a stream is always idle;
    streams exist so code that switches and waits on them runs unchanged."""

    def __new__(cls, device: DeviceLike = None, priority: int = 0, **kwargs: Any) -> Stream:
        if "stream_id" in kwargs:  # wrapping an existing stream
            return super().__new__(cls, **kwargs)
        return super().__new__(cls, device=torch.device("npu", _index(device)), priority=priority)

    def __repr__(self) -> str:
        return f"<torch.npu.Stream device=npu:{self.device_index} stream_id={self.stream_id}>"


class Event(torch.Event):
    """An npu event. Recording completes at once; :meth:`elapsed_time` is host time between
    the two records, not device time."""

    def __new__(
        cls, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False
    ) -> Event:
        return super().__new__(
            cls,
            device=torch.device("npu", current_device()),
            enable_timing=enable_timing,
            blocking=blocking,
            interprocess=interprocess,
        )

    def elapsed_time(self, end_event: torch.Event) -> float:
        """Milliseconds of host time from this event's record to ``end_event``'s.

        (torch.Event's own method accepts only exact torch.Event objects.)"""
        if not isinstance(end_event, torch.Event) or end_event.device.type != "npu":
            raise TypeError(f"expected an npu event, got {end_event!r}")
        return float(_C.elapsed_time(self.event_id, end_event.event_id))


def current_stream(device: DeviceLike = None) -> Stream:
    """The stream work on ``device`` goes to in this thread."""
    stream_id, index, device_type = _C.current_stream(_index(device))
    return Stream(stream_id=stream_id, device_index=index, device_type=device_type)


def default_stream(device: DeviceLike = None) -> Stream:
    stream_id, index, device_type = _C.default_stream(_index(device))
    return Stream(stream_id=stream_id, device_index=index, device_type=device_type)


def set_stream(stream: torch.Stream) -> None:
    """Make ``stream`` the current stream of its device, in this thread."""
    if stream.device.type != "npu":
        raise ValueError(f"expected an npu stream, got {stream!r}")
    _C.set_stream(stream.stream_id, stream.device_index)


@contextmanager
def stream(stream: torch.Stream | None) -> Iterator[None]:
    """Make ``stream`` current on its device within the block (``None``: no change)."""
    if stream is None:
        yield
        return
    previous = current_stream(stream.device_index)
    set_stream(stream)
    try:
        yield
    finally:
        set_stream(previous)
