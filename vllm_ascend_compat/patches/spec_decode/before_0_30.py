"""Rejection-sampler kernels in torch for 0.20 to 0.29, launched like the Triton ones.

From 0.20 the greedy and random kernels take the synthetic-acceptance inputs, and from
0.23 the recovered-token kernel a float64 Gumbel flag (the dtype of ``inv_q`` carries it
here); ``expand_kernel`` is the same on every release before 0.30.
"""

from typing import Any

from vllm_ascend_compat.patches.spec_decode import launch
from vllm_ascend_compat.patches.triton_kernels.launch import GridLaunch


def torch_greedy_sample(original: Any) -> GridLaunch:
    return GridLaunch(launch.greedy)


def torch_random_sample(original: Any) -> GridLaunch:
    return GridLaunch(launch.random)


def torch_expand(original: Any) -> GridLaunch:
    return GridLaunch(launch.expand)


def torch_recovered_tokens(original: Any) -> GridLaunch:
    return GridLaunch(launch.recovered)
