"""The bounded drain of the API server: an ASGI middleware that knows the requests in
flight, drained before the engine shuts down."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from vllm_ascend_compat.log import logger
from vllm_ascend_compat.patches.asgi import add_outermost_middleware, error_body, send_error

SHUTTING_DOWN = "The server is shutting down."
# How long the cut requests get to send their error before the engine shuts down.
CUT_GRACE_S = 5.0


class InFlight:
    """The API server's requests in flight, each by the task that serves it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.requests: dict[asyncio.Task[Any], _Request] = {}
        self.draining = False

    async def drain(self) -> None:
        """Refuse new requests; give those in flight ``timeout`` seconds; then cut the rest,
        which answer with the shutdown error."""
        self.draining = True
        loop = asyncio.get_running_loop()
        logger.info(
            "Shutting down: draining %d requests for up to %s s", len(self.requests), self.timeout
        )
        deadline = loop.time() + self.timeout
        while self.requests and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.requests:
            logger.info("Shutting down: %d requests cut", len(self.requests))
        for task, request in list(self.requests.items()):
            request.cut = True
            task.cancel()
        deadline = loop.time() + CUT_GRACE_S
        while self.requests and loop.time() < deadline:
            await asyncio.sleep(0.05)


class DrainMiddleware:
    """Outermost in the app: counts each HTTP request in flight, refuses new ones with a 503
    while draining, and answers a cut one with the shutdown error."""

    def __init__(self, app: Any, in_flight: InFlight) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight.draining:
            await _Request(send).refuse()
            return
        task = asyncio.current_task()
        assert task is not None
        request = _Request(send)
        self.in_flight.requests[task] = request
        try:
            await self.app(scope, receive, request.send)
        except asyncio.CancelledError:
            if not request.cut:
                raise
        finally:
            del self.in_flight.requests[task]
        if request.cut:
            await request.refuse()


class _Request:
    """One request's response, as far as it went; once cut, vLLM's own answer to the
    cancellation (a "Client disconnected" error) is dropped for the shutdown error."""

    __slots__ = ("client_send", "cut", "finished", "started", "streaming")

    def __init__(self, client_send: Any) -> None:
        self.client_send = client_send
        self.cut = False
        self.started = False
        self.streaming = False
        self.finished = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict(message.get("headers", ()))
            self.streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self.client_send(message)

    async def refuse(self) -> None:
        """The shutdown error: a 503 before the response started; an error event and the
        end of the stream in the middle of one."""
        if self.finished:
            return
        if not self.started:
            await send_error(self.client_send, 503, SHUTTING_DOWN)
        else:
            event = f"data: {json.dumps(error_body(503, SHUTTING_DOWN))}\n\ndata: [DONE]\n\n"
            body = event.encode() if self.streaming else b""
            await self.client_send({"type": "http.response.body", "body": body})
        self.finished = True


# From 0.18 on (before_0_29 and since_0_29 re-export it): drain inside the engine shutdown.
def drain_before_engine_shutdown(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return _serve_draining_first(wrapped, args, kwargs)


async def _serve_draining_first(wrapped: Any, args: Any, kwargs: Any) -> Any:
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
