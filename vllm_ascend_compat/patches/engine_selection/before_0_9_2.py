"""The V1 oracle of 0.9.0 and 0.9.1 as 0.9.2 has it: V1 by default, float32 allowed."""

import os
from typing import Any

import torch


def v1_on_this_platform(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Once per engine. An unset VLLM_USE_V1 becomes 1 (the engine and worker processes
    inherit it); the model config is shown to the oracle as bf16, then restored."""
    os.environ.setdefault("VLLM_USE_V1", "1")
    model_config = args[0] if args else kwargs["model_config"]
    if model_config.dtype != torch.float32:
        return wrapped(*args, **kwargs)
    model_config.dtype = torch.bfloat16
    try:
        return wrapped(*args, **kwargs)
    finally:
        model_config.dtype = torch.float32
