"""The V1 scheduler the platform selects: vLLM's own, as a thin subclass.

It is the one place for scheduler-level behaviour NPU mode needs. The engine
core constructs it with the keywords of its own release (``block_size`` from
0.11.1, ``hash_block_size`` from 0.20.0), so it passes every argument through
rather than spelling out one release's signature.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from vllm_ascend_compat.log import logger


class NPUScheduler(Scheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        logger.info(
            "vllm-ascend-compat: scheduling with %s (block size %s)",
            type(self).__name__,
            self.cache_config.block_size,
        )
