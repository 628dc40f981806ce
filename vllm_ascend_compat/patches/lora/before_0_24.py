"""0.22-0.23: the LoRA mapping's host-to-device copy pins memory only where the platform can."""

from collections.abc import Callable
from typing import Any

import torch
from vllm.platforms import current_platform


def pin_memory_from_platform(original: Callable[..., Any]) -> Callable[..., Any]:
    pin = current_platform.is_pin_memory_available()

    def async_tensor_h2d(
        data: list, dtype: torch.dtype, device: str | torch.device, pin_memory: bool = pin
    ) -> torch.Tensor:
        """vLLM 0.23.0's async_tensor_h2d with the platform's pin_memory as the default."""
        t = torch.tensor(data, dtype=dtype, pin_memory=pin_memory, device="cpu")
        return t.to(device=device, non_blocking=True)

    return async_tensor_h2d
