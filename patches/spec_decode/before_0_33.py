"""Rejection-sampler kernels in torch for 0.32: each kernel sits in a warm-up dispatcher.

The dispatcher binds its inputs to the kernel's parameter names and launches
``kernel[grid](**kwargs)``; the torch stand-in takes the kernel's place with the
same names, so the dispatcher, its warm-up registration and vLLM's host code stay.
The kernels' parameters are those of 0.23 to 0.31.
"""

import inspect
from collections.abc import Callable
from typing import Any

from vllm_ascend_compat.patches.spec_decode import before_0_32
from vllm_ascend_compat.patches.spec_decode.kernels import KernelLaunch


def _launch(fn: Callable[..., None]) -> KernelLaunch:
    params = inspect.signature(fn).parameters.values()
    names = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    return KernelLaunch(fn, names[1:])  # without the grid


def torch_greedy_sample(original: Any) -> KernelLaunch:
    return _launch(before_0_32.greedy)


def torch_random_sample(original: Any) -> KernelLaunch:
    return _launch(before_0_32.random)


def torch_expand(original: Any) -> KernelLaunch:
    return _launch(before_0_32.expand)


def torch_recovered_tokens(original: Any) -> KernelLaunch:
    return _launch(before_0_32.recovered)
