"""Backport of vLLM PR 45116 (0.24.0) for releases before 0.24."""

import math
from typing import Any

CHECKED = ("temperature", "repetition_penalty")


def reject_non_finite(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    for name in CHECKED:
        value = getattr(instance, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}.")
    return wrapped(*args, **kwargs)
