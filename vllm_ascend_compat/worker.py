"""The V1 worker and model runner: vLLM's own GPU classes, with the device behind the facade.

Subclassing keeps this small: vLLM's runner already does batching, chunked
prefill, prefix caching and sampling. What differs per device is set up here
through :mod:`vllm_ascend_compat.device`; graph capture is not used (eager only).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from vllm.distributed.parallel_state import get_pp_group
from vllm.platforms import current_platform
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
from vllm.v1.worker.gpu_worker import Worker, init_worker_distributed_environment

from vllm_ascend_compat import attention, layers, ops, patching, plugin
from vllm_ascend_compat.device import current as current_device
from vllm_ascend_compat.log import logger

try:  # vLLM 0.18+ keeps it with the torch helpers
    from vllm.utils.torch_utils import set_random_seed
except ImportError:
    from vllm.model_executor.utils import set_random_seed

try:  # 0.20+: warm-up reports its compilation times as a named tuple
    from vllm.v1.worker.worker_base import CompilationTimes

    NO_COMPILATION: Any = CompilationTimes(*[0.0] * len(CompilationTimes._fields))
except ImportError:
    NO_COMPILATION = 0.0


class NPUModelRunner(GPUModelRunner):
    def __init__(self, vllm_config: Any, device: torch.device) -> None:
        with current_device().as_cuda():
            super().__init__(vllm_config, device)

    def _init_device_properties(self) -> None:
        pass  # no CUDA device properties to read

    def _sync_device(self) -> None:
        current_device().synchronize()

    def capture_model(self) -> int:
        return 0  # eager only: nothing to capture


class NPUWorker(Worker):
    def init_device(self) -> None:
        dev = current_device()
        self.device = dev.torch_device(self.local_rank)
        dev.set_device(self.device)
        current_platform.check_if_supports_dtype(self.model_config.dtype)
        init_worker_distributed_environment(
            self.vllm_config,
            self.rank,
            self.distributed_init_method,
            self.local_rank,
            current_platform.dist_backend,
        )
        set_random_seed(self.model_config.seed)
        plugin.apply_phase(patching.Phase.WORKER)
        kernels = ops.register()
        served = layers.register()
        attention.register()
        logger.info(
            "vllm-ascend-compat worker on %s: %s kernels; %s and attention run on "
            "the plugin's layers", self.device, kernels, ", ".join(served),
        )  # fmt: skip
        self.model_runner: NPUModelRunner = NPUModelRunner(self.vllm_config, self.device)

    def determine_available_memory(self) -> int:
        requested = getattr(self.cache_config, "kv_cache_memory_bytes", None)
        return current_device().kv_cache_budget(requested, self.cache_config.gpu_memory_utilization)

    def compile_or_warm_up_model(self) -> Any:
        """Warm up eagerly; returns the compilation time vLLM 0.18+ collects (none here).

        As vLLM's worker, only the last pipeline stage has hidden states to sample from.
        """
        runner = self.model_runner
        if get_pp_group().is_last_rank:
            max_num_reqs = min(
                self.scheduler_config.max_num_seqs, self.scheduler_config.max_num_batched_tokens
            )
            hidden_states, last_hidden_states = runner._dummy_run(num_tokens=max_num_reqs)
            if runner.is_pooling_model:
                runner._dummy_pooler_run(hidden_states)
            else:
                runner._dummy_sampler_run(hidden_states=last_hidden_states)
        set_random_seed(self.model_config.seed)
        return NO_COMPILATION

    def _maybe_get_memory_pool_context(self, tag: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # no sleep-mode allocator: plain allocations

    def sleep(self, level: int = 1) -> None:
        logger.warning("vllm-ascend-compat: sleep mode is not supported; ignored")

    def wake_up(self, tags: list[str] | None = None) -> None:
        logger.warning("vllm-ascend-compat: sleep mode is not supported; ignored")
