"""The bounded drain of the API server: an ASGI middleware that knows the requests in
flight, drained before the engine shuts down."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from vllm_ascend_compat.log import logger

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
        error = {"message": SHUTTING_DOWN, "type": "ServiceUnavailableError", "code": 503}
        if not self.started:
            payload = json.dumps({"error": error}).encode()
            await self.client_send({
                "type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())],
            })  # fmt: skip
            await self.client_send({"type": "http.response.body", "body": payload})
        else:
            body = (
                f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"
                if self.streaming
                else ""
            )
            await self.client_send({"type": "http.response.body", "body": body.encode()})
        self.finished = True
