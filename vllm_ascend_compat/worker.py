"""The V1 worker and model runner: vLLM's own GPU classes, with the device behind the facade.

Subclassing keeps this small: vLLM's runner already does batching, chunked
prefill, prefix caching and sampling. What differs per device is set up here
through :mod:`vllm_ascend_compat.device`; graph capture is not used (eager only).
"""

from __future__ import annotations

import contextlib
import inspect
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


def _init_distributed(
    vllm_config: Any, rank: int, init_method: str | None, local_rank: int
) -> None:
    """vLLM's worker distributed setup over this device's backend (HCCL or gloo)."""
    backend = current_platform.dist_backend
    if "backend" in inspect.signature(init_worker_distributed_environment).parameters:
        init_worker_distributed_environment(vllm_config, rank, init_method, local_rank, backend)
    else:  # 0.9.0 and 0.9.1 take no backend (NCCL is the default): the same steps, with ours
        from vllm.distributed import (
            ensure_model_parallel_initialized,
            init_distributed_environment,
            set_custom_all_reduce,
        )
        from vllm.distributed.kv_transfer import ensure_kv_transfer_initialized

        parallel = vllm_config.parallel_config
        set_custom_all_reduce(not parallel.disable_custom_all_reduce)
        init_distributed_environment(parallel.world_size, rank, init_method, local_rank, backend)
        tensor, pipeline = parallel.tensor_parallel_size, parallel.pipeline_parallel_size
        ensure_model_parallel_initialized(tensor, pipeline)
        ensure_kv_transfer_initialized(vllm_config)


class RewindableGenerator(torch.Generator):
    """A seeded request's generator on a device whose generators have no Philox offset.

    vLLM samples a token for every partial prefill, discards it and rewinds the generator
    with ``set_offset(get_offset() - 4)``, which only CUDA-style generators take: a CPU
    generator raises, and the engine dies. This one goes back to the state the runner saved
    before sampling (:meth:`NPUModelRunner._update_states_saving_generators`)."""

    before_sampling: torch.Tensor

    def get_offset(self) -> int:
        return 0

    def set_offset(self, offset: int) -> None:
        self.set_state(self.before_sampling)


def _generators_have_offsets(device: torch.device) -> bool:
    try:
        torch.Generator(device=device).get_offset()
    except RuntimeError:
        return False
    return True


class NPUModelRunner(GPUModelRunner):
    def __init__(self, vllm_config: Any, device: torch.device) -> None:
        with current_device().as_cuda():
            super().__init__(vllm_config, device)
        if not _generators_have_offsets(device):
            self._update_states = self._update_states_saving_generators

    def _update_states_saving_generators(self, scheduler_output: Any) -> Any:
        """vLLM's ``_update_states``; then each new seeded request gets a
        :class:`RewindableGenerator` (same state), and every seeded generator's state is saved
        for the rewind after this step's sampling."""
        result = super()._update_states(scheduler_output)
        generators = self.input_batch.generators
        if generators:
            for new in scheduler_output.scheduled_new_reqs:
                state = self.requests[new.req_id]
                if state.generator is None or isinstance(state.generator, RewindableGenerator):
                    continue
                rewindable = RewindableGenerator(device=self.device)
                rewindable.set_state(state.generator.get_state())
                state.generator = rewindable
                generators[self.input_batch.req_id_to_index[new.req_id]] = rewindable
            for generator in generators.values():
                generator.before_sampling = generator.get_state()
        return result

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
        _init_distributed(
            self.vllm_config, self.rank, self.distributed_init_method, self.local_rank
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
            ran = runner._dummy_run(num_tokens=max_num_reqs)
            # 0.9.0 and 0.9.1 return the sampled positions' hidden states alone
            hidden_states, last_hidden_states = ran if isinstance(ran, tuple) else (ran, ran)
            if getattr(runner, "is_pooling_model", False):  # no pooling in V1 before 0.9.2
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
