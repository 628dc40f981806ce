"""Rejection-sampler kernels in torch from 0.30, where each sits in a warm-up dispatcher.

The dispatcher binds its inputs to the kernel's parameter names and launches
``kernel[grid](**kwargs)``; the torch stand-in takes the kernel's place with the
same names, so the dispatcher, its warm-up registration and vLLM's host code stay.
The kernels' parameters are those of 0.23 to 0.29.
"""

from typing import Any

from vllm_ascend_compat.patches.spec_decode import launch
from vllm_ascend_compat.patches.triton_kernels.launch import KernelLaunch


def torch_greedy_sample(original: Any) -> KernelLaunch:
    return KernelLaunch(launch.greedy)


def torch_random_sample(original: Any) -> KernelLaunch:
    return KernelLaunch(launch.random)


def torch_expand(original: Any) -> KernelLaunch:
    return KernelLaunch(launch.expand)


def torch_recovered_tokens(original: Any) -> KernelLaunch:
    return KernelLaunch(launch.recovered)
