"""The same hardening where ``serve_http`` moved to ``launchers.launcher`` (0.29)."""

from vllm_ascend_compat.patches.graceful_shutdown.drain import drain_before_engine_shutdown

__all__ = ["drain_before_engine_shutdown"]
