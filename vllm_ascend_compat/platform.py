"""The vLLM platform for Ascend NPUs, and for the CPU mode that stands in for one.

One class for both devices: what differs comes from :mod:`vllm_ascend_compat.device`.
Where vLLM's Platform interface drifts between releases, the methods accept every
shape the supported lines call them with (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.platforms.interface import Platform, PlatformEnum

from vllm_ascend_compat import device
from vllm_ascend_compat.log import logger

_DEVICE = device.current()
_MODEL_DTYPES = device.model_dtypes()
_MODULE = "vllm_ascend_compat"
ATTENTION_BACKEND = f"{_MODULE}.attention.AscendAttentionBackend"
MLA_BACKEND = f"{_MODULE}.mla.AscendMLABackend"
SCHEDULER = f"{_MODULE}.scheduler.NPUScheduler"
VLLM_SCHEDULERS = ("vllm.core.scheduler.Scheduler", "vllm.v1.core.sched.scheduler.Scheduler")
DEVICE_COMMUNICATOR = (
    "vllm.distributed.device_communicators.base_device_communicator.DeviceCommunicatorBase"
)


class NPUPlatform(Platform):
    _enum = PlatformEnum.OOT
    device_name = _DEVICE.type
    device_type = _DEVICE.type
    dispatch_key = _DEVICE.dispatch_key
    dist_backend = _DEVICE.dist_backend
    ray_device_key = "NPU"
    device_control_env_var = "ASCEND_RT_VISIBLE_DEVICES"
    simple_compile_backend = "eager"

    @property
    def supported_dtypes(self) -> list[torch.dtype]:
        """vLLM's "auto" takes the first; float32 stays listed on an NPU, where torch ops
        (a pooling model's float32 head) run it: only the model dtype is refused, by
        check_if_supports_dtype."""
        return [torch.bfloat16, torch.float16, torch.float32]

    # --- attention ---------------------------------------------------------------------

    @classmethod
    def get_attn_backend_cls(
        cls,
        selected_backend: Any,
        head_size: int | None = None,
        dtype: Any = None,
        kv_cache_dtype: Any = None,
        block_size: int | None = None,
        use_v1: bool = True,
        use_mla: bool = False,
        has_sink: bool = False,
        use_sparse: bool = False,
        *args: Any,
        attn_selector_config: Any = None,
        **kwargs: Any,
    ) -> str:
        """Every release's call: positional flags (0.9-0.12) or a selector config (0.13+).
        ``use_v1`` stays in the signature: 0.11.1-0.12 read the signature and leave it out,
        shifting every later flag by one, for a platform that does not declare it."""
        if attn_selector_config is not None:
            use_mla = attn_selector_config.use_mla
            use_sparse = getattr(attn_selector_config, "use_sparse", False)
        if use_sparse:
            raise NotImplementedError(
                "vllm-ascend-compat does not implement sparse MLA attention (DeepSeek V3.2)"
            )
        return MLA_BACKEND if use_mla else ATTENTION_BACKEND

    @classmethod
    def get_mla_prefill_backend_cls(cls, mla_selector_config: Any) -> Any:
        """0.32+: the prefill backend vLLM's MLA layer builds, never called (mla_prefill.py)."""
        from vllm_ascend_compat.mla_prefill import AscendMLAPrefillBackend

        return AscendMLAPrefillBackend

    # --- device ------------------------------------------------------------------------

    @classmethod
    def get_device_name(cls, device_id: int = 0) -> str:
        return _DEVICE.name(device_id)

    @classmethod
    def get_device_total_memory(cls, device_id: int = 0) -> int:
        return _DEVICE.total_memory(device_id)

    @classmethod
    def set_device(cls, device: torch.device) -> None:
        _DEVICE.set_device(device)

    @classmethod
    def inference_mode(cls) -> Any:
        return torch.inference_mode()

    @classmethod
    def is_pin_memory_available(cls) -> bool:
        return _DEVICE.pin_memory()

    @classmethod
    def get_current_memory_usage(cls, device: Any = None) -> float:
        return float(_DEVICE.memory_in_use())

    @classmethod
    def manual_seed_all(cls, seed: int) -> None:
        _DEVICE.manual_seed_all(seed)

    @classmethod
    def seed_everything(cls, seed: int | None = None) -> None:
        if seed is not None:
            import random

            import numpy as np

            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            _DEVICE.manual_seed_all(seed)

    @classmethod
    def import_kernels(cls) -> None:
        from vllm_ascend_compat import ops

        ops.register()

    @classmethod
    def check_if_supports_dtype(cls, dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        """The model dtype; on an NPU float16 or bfloat16, which ATB's attention takes."""
        dtype = dtype if dtype is not None else kwargs.get("torch_dtype")
        if dtype in _MODEL_DTYPES:
            return
        if _DEVICE.type == "npu":
            raise ValueError(
                f"vllm-ascend-compat on an NPU does not support dtype {dtype}: the ATB "
                "attention kernels take float16 and bfloat16 only. Pass --dtype bfloat16 "
                "(or float16; dtype=... in Python)."
            )
        raise ValueError(f"vllm-ascend-compat does not support dtype {dtype}")

    # --- configuration -----------------------------------------------------------------

    @classmethod
    def pre_register_and_update(cls, parser: Any = None) -> None:
        if parser is not None:
            from vllm_ascend_compat import quantization  # vLLM's layers: not at platform load

            quantization.allow_on_command_line(parser)

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        """A dtype and a block size the kernels take, eager execution, our worker and
        scheduler, an msModelSlim checkpoint's quantization. The dtype is checked here,
        before any process starts, not only in the worker."""
        _refuse_v0_engine()
        model = vllm_config.model_config
        if model is not None:
            cls.check_if_supports_dtype(model.dtype)
            from vllm_ascend_compat import quantization  # vLLM's layers: not at platform load

            quantization.auto_detect(vllm_config)
        parallel = vllm_config.parallel_config
        if parallel.worker_cls == "auto":
            parallel.worker_cls = f"{_MODULE}.worker.NPUWorker"
        if vllm_config.cache_config is not None:
            _set_block_size(vllm_config.cache_config)
        if model is not None and not model.enforce_eager:
            logger.info("vllm-ascend-compat: graph capture is not available; running eager")
            model.enforce_eager = True
        _disable_compilation(vllm_config.compilation_config)
        scheduler_config = vllm_config.scheduler_config
        if getattr(scheduler_config, "async_scheduling", False):
            logger.warning("vllm-ascend-compat: async scheduling is not supported; disabled")
            scheduler_config.async_scheduling = False
        _select_scheduler(scheduler_config)
        if model is not None:
            model.disable_cascade_attn = True

    @classmethod
    def get_device_communicator_cls(cls) -> str:
        """vLLM's base communicator over this device's process group (HCCL or gloo)."""
        return DEVICE_COMMUNICATOR

    @classmethod
    def get_punica_wrapper(cls) -> str:
        return "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"

    @classmethod
    def use_all_gather(cls) -> bool:
        return True

    @classmethod
    def support_hybrid_kv_cache(cls) -> bool:
        return False

    @classmethod
    def support_static_graph_mode(cls) -> bool:
        return False

    @classmethod
    def is_async_output_supported(cls, enforce_eager: bool | None) -> bool:
        return False

    @classmethod
    def supports_v1(cls, model_config: Any) -> bool:
        return True

    @classmethod
    def default_v1(cls, model_config: Any) -> bool:
        return True


def _disable_compilation(compilation_config: Any) -> None:
    """No torch.compile and no graph capture, whatever the release calls the knobs."""
    if hasattr(compilation_config, "mode"):
        from vllm.config import CompilationMode

        compilation_config.mode = CompilationMode.NONE
    else:
        from vllm.config import CompilationLevel

        compilation_config.level = CompilationLevel.NO_COMPILATION
    compilation_config.cudagraph_capture_sizes = []
    if hasattr(compilation_config, "cudagraph_mode"):
        from vllm.config import CUDAGraphMode

        compilation_config.cudagraph_mode = CUDAGraphMode.NONE


def _select_scheduler(scheduler_config: Any) -> None:
    """Our scheduler subclass, unless the user configured a scheduler class of their own."""
    chosen = scheduler_config.scheduler_cls
    if isinstance(chosen, type):
        chosen = f"{chosen.__module__}.{chosen.__qualname__}"
    if chosen is None or chosen in VLLM_SCHEDULERS:
        scheduler_config.scheduler_cls = SCHEDULER
    elif chosen != SCHEDULER:
        logger.info("vllm-ascend-compat: keeping the configured scheduler %s", chosen)


def _set_block_size(cache: Any) -> None:
    """device.BLOCK_SIZE unless the user chose one; on an NPU no other size runs. From 0.18
    vLLM fills in its own default (16) before the platform sees the config and records
    whether the user chose (``user_specified_block_size``); before, an unset size is None."""
    chosen = getattr(cache, "user_specified_block_size", cache.block_size is not None)
    if not chosen:
        cache.block_size = device.BLOCK_SIZE
    elif _DEVICE.type == "npu" and cache.block_size != device.BLOCK_SIZE:
        raise ValueError(
            f"vllm-ascend-compat on an NPU needs --block-size {device.BLOCK_SIZE}, not "
            f"{cache.block_size}: ATB paged attention takes multiples of 16 up to 128 and "
            "fused infer attention multiples of 128, so 128 is the one size both take."
        )


def _refuse_v0_engine() -> None:
    """The plugin implements vLLM's V1 engine only; 0.9.2 still has V0 (VLLM_USE_V1=0)."""
    import vllm.envs as envs

    if getattr(envs, "VLLM_USE_V1", True):
        return
    raise RuntimeError(
        "vllm-ascend-compat runs vLLM's V1 engine only, and this configuration selects the "
        "V0 engine (VLLM_USE_V1=0, or a V0-only feature on vLLM 0.9.2). V0 needs its own "
        "worker, model runner and attention metadata, which this plugin does not implement. "
        "Unset VLLM_USE_V1 or set VLLM_USE_V1=1."
    )
