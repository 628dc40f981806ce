"""The one place where the NPU and the CPU mode differ: a small device facade.

The platform, worker, model runner and attention backend are the same code on
both; they ask this module for the device type, synchronisation, memory figures,
events and streams. The NPU side calls torch_npu (``torch.npu``); the CPU side is
what a synchronous host device needs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from types import SimpleNamespace
from typing import Any

import torch

from vllm_ascend_compat import activation, envs

GiB = 1 << 30

# The KV cache block size when the user names none, in both modes. On an NPU it is the only
# one the kernels share: ATB paged attention (decode) takes multiples of 16 up to 128, and
# fused infer attention over a paged cache (prefill) multiples of 128 from 128 to 512.
BLOCK_SIZE = 128


def _nothing(*args: Any, **kwargs: Any) -> None:
    pass


class _HostEvent:
    """Events and streams are no-ops on a synchronous host device."""

    device = torch.device("cpu")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, *args: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait(self, *args: Any) -> None:
        pass

    def wait_stream(self, *args: Any) -> None:
        pass

    def query(self) -> bool:
        return True


class Device:
    """The device the plugin runs on; ``current()`` picks NPU or CPU mode."""

    type: str
    dispatch_key: str
    dist_backend: str

    def torch_device(self, index: int = 0) -> torch.device:
        raise NotImplementedError

    def set_device(self, device: torch.device) -> None:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def device_count(self) -> int:
        raise NotImplementedError

    def name(self, index: int = 0) -> str:
        raise NotImplementedError

    def total_memory(self, index: int = 0) -> int:
        raise NotImplementedError

    def memory_in_use(self) -> int:
        raise NotImplementedError

    def empty_cache(self) -> None:
        raise NotImplementedError

    def manual_seed_all(self, seed: int) -> None:
        raise NotImplementedError

    def pin_memory(self) -> bool:
        raise NotImplementedError

    def kv_cache_budget(self, requested: int | None, utilization: float) -> int:
        """Bytes the KV cache may take, after the model is loaded."""
        raise NotImplementedError

    def init_process(self) -> None:
        """Prepare a vLLM process (front end, engine core or worker) for this device."""

    @contextlib.contextmanager
    def as_cuda(self) -> Iterator[None]:
        """Let vLLM's CUDA-named event and stream calls reach this device."""
        yield

    def properties(self, device: Any = None) -> SimpleNamespace:
        """What vLLM 0.9.0 and 0.9.1's runner reads from ``torch.cuda.get_device_properties``
        in its constructor; the SM count serves only cascade attention, which the platform
        turns off."""
        return SimpleNamespace(name=self.name(), multi_processor_count=1)


class NpuDevice(Device):
    type = "npu"
    dispatch_key = "PrivateUse1"
    dist_backend = "hccl"

    def __init__(self) -> None:
        import torch_npu  # noqa: F401  (registers torch.npu)

        self.npu: Any = getattr(torch, "npu")  # noqa: B009  (added by torch_npu)

    def torch_device(self, index: int = 0) -> torch.device:
        return torch.device("npu", index)

    def set_device(self, device: torch.device) -> None:
        self.npu.set_device(device)

    def synchronize(self) -> None:
        self.npu.synchronize()

    def device_count(self) -> int:
        return int(self.npu.device_count())

    def name(self, index: int = 0) -> str:
        return str(self.npu.get_device_name(index))

    def total_memory(self, index: int = 0) -> int:
        return int(self.npu.get_device_properties(index).total_memory)

    def memory_in_use(self) -> int:
        return int(self.npu.memory_allocated())

    def empty_cache(self) -> None:
        self.npu.empty_cache()

    def manual_seed_all(self, seed: int) -> None:
        self.npu.manual_seed_all(seed)

    def pin_memory(self) -> bool:
        return True

    def kv_cache_budget(self, requested: int | None, utilization: float) -> int:
        if requested is not None:
            return requested
        self.empty_cache()
        free, total = self.npu.mem_get_info()
        used_by_others_and_model = total - free
        return int(total * utilization - used_by_others_and_model)

    @contextlib.contextmanager
    def as_cuda(self) -> Iterator[None]:
        names = ("Event", "Stream", "current_stream", "default_stream", "stream")
        saved = {name: getattr(torch.cuda, name) for name in (*names, "get_device_properties")}
        try:
            for name in names:
                setattr(torch.cuda, name, getattr(self.npu, name))
            torch.cuda.get_device_properties = self.properties
            yield
        finally:
            for name, value in saved.items():
                setattr(torch.cuda, name, value)


class CpuDevice(Device):
    type = "cpu"
    dispatch_key = "CPU"
    dist_backend = "gloo"

    def torch_device(self, index: int = 0) -> torch.device:
        return torch.device("cpu")

    def set_device(self, device: torch.device) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def device_count(self) -> int:
        return 1

    def name(self, index: int = 0) -> str:
        return "cpu"

    def total_memory(self, index: int = 0) -> int:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def memory_in_use(self) -> int:
        import psutil

        return int(psutil.Process().memory_info().rss)

    def empty_cache(self) -> None:
        pass

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def pin_memory(self) -> bool:
        return False

    def kv_cache_budget(self, requested: int | None, utilization: float) -> int:
        if requested is not None:
            return requested
        return int(float(os.environ.get(envs.CPU_KV_CACHE_GIB, "1")) * GiB)

    def init_process(self) -> None:
        # vLLM calls torch.accelerator.synchronize()/empty_cache() directly (0.23+), and
        # empty_host_cache() at shutdown (0.32+); with no accelerator they raise, and a
        # host device has nothing to do.
        accelerator = getattr(torch, "accelerator", None)
        for name in ("synchronize", "empty_cache", "empty_host_cache"):
            if hasattr(accelerator, name):
                setattr(accelerator, name, _nothing)

    @contextlib.contextmanager
    def as_cuda(self) -> Iterator[None]:
        # torch.cuda.Event/Stream, and the device-generic torch.Event (0.13+), which
        # raises on the CPU backend.
        targets = [(torch.cuda, "Event"), (torch.cuda, "Stream"), (torch, "Event")]
        saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
        saved.append((torch.cuda, "get_device_properties", torch.cuda.get_device_properties))
        try:
            for owner, name, _ in saved[:-1]:
                setattr(owner, name, _HostEvent)
            torch.cuda.get_device_properties = self.properties
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)


def model_dtypes() -> list[torch.dtype]:
    """The model dtypes this mode runs. ATB's attention kernels (paged attention, fused
    infer attention) take float16 and bfloat16 only; the CPU kernels float32 as well. From
    the activation decision, so it is safe to ask at import time, active or not."""
    if activation.decide().device == "npu":
        return [torch.bfloat16, torch.float16]
    return [torch.bfloat16, torch.float16, torch.float32]


@cache
def current() -> Device:
    """The device for this process, from the activation decision."""
    return CpuDevice() if activation.decide().device == "cpu" else NpuDevice()
