"""The backport: before 0.18 ``serve_http`` stops the HTTP server on a signal and hands back
its shutdown; the caller then shuts the engine down and awaits that shutdown."""

from __future__ import annotations

from typing import Any

from vllm_ascend_compat import envs
from vllm_ascend_compat.patches.asgi import add_outermost_middleware
from vllm_ascend_compat.patches.graceful_shutdown.drain import DrainMiddleware, InFlight


def drain_on_sigterm(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return _serve_draining(wrapped, args, kwargs)


async def _serve_draining(wrapped: Any, args: Any, kwargs: Any) -> Any:
    """``serve_http`` returns when a signal has cancelled the HTTP server's main loop, but
    before its caller shuts the engine down: the requests in flight still run. Drain them
    there, then hand back the uvicorn shutdown, which now finds every connection answered."""
    app = args[0] if args else kwargs["app"]
    in_flight = InFlight(envs.shutdown_timeout())
    add_outermost_middleware(app, DrainMiddleware, in_flight=in_flight)
    shutdown = await wrapped(*args, **kwargs)
    await in_flight.drain()
    return shutdown
