"""The hardening from 0.18 on: on a signal ``serve_http`` shuts the engine down (draining
it for ``--shutdown-timeout`` seconds) while the HTTP server still takes requests: one
arriving then gets an empty answer (0.18) or a 500 (0.33: "cannot schedule new futures
after shutdown"). Drain the HTTP requests first (``drain.drain_before_engine_shutdown``)."""

from vllm_ascend_compat.patches.graceful_shutdown.drain import drain_before_engine_shutdown

__all__ = ["drain_before_engine_shutdown"]
