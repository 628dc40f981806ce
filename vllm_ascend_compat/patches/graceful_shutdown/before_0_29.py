"""The hardening from 0.18 on: on a signal ``serve_http`` shuts the engine down (draining
it for ``--shutdown-timeout`` seconds) while the HTTP server still takes requests: one
arriving then gets an empty answer (0.18) or a 500 (0.33: "cannot schedule new futures
after shutdown"). Drain the HTTP requests first."""

from __future__ import annotations

import asyncio
from typing import Any

from vllm_ascend_compat.patches.asgi import add_outermost_middleware
from vllm_ascend_compat.patches.graceful_shutdown.drain import DrainMiddleware, InFlight


def drain_before_engine_shutdown(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return _serve_draining(wrapped, args, kwargs)


async def _serve_draining(wrapped: Any, args: Any, kwargs: Any) -> Any:
    """vLLM calls ``engine_client.shutdown(timeout=...)`` in an executor thread on a signal:
    that call first drains the HTTP requests on the loop, for the same timeout."""
    app = args[0] if args else kwargs["app"]
    in_flight = InFlight(0.0)
    add_outermost_middleware(app, DrainMiddleware, in_flight=in_flight)
    engine_client = app.state.engine_client
    shutdown = engine_client.shutdown
    loop = asyncio.get_running_loop()

    def drain_then_shutdown(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        on_the_loop = asyncio._get_running_loop() is loop  # the engine's own exit path
        if not in_flight.draining and not on_the_loop:
            in_flight.timeout = timeout or 0.0
            asyncio.run_coroutine_threadsafe(in_flight.drain(), loop).result()
        return shutdown(*args, timeout=timeout, **kwargs)

    engine_client.shutdown = drain_then_shutdown
    return await wrapped(*args, **kwargs)
