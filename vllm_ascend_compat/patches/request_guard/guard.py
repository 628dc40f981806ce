"""The request guard: an ASGI middleware outermost in vLLM's OpenAI app (every release)."""

from __future__ import annotations

import json
import math
from typing import Any, TypeGuard

from vllm_ascend_compat import envs
from vllm_ascend_compat.patches.asgi import add_outermost_middleware, send_error

# vLLM 0.33.0 caps stop lists at this length; earlier releases take any length.
MAX_STOP_STRINGS = 1024

Scope = dict[str, Any]


def add_request_guard(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    app = wrapped(*args, **kwargs)
    add_outermost_middleware(app, RequestGuard, max_body_bytes=envs.max_body_bytes())
    return app


class RequestGuard:
    """Reads a POST body, keeping at most ``max_body_bytes`` (a longer one gets a 413); checks
    a JSON body (400 naming the problem); then hands the same bytes on to vLLM's app."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_model_len: int | None = None  # read from the app state on first use

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body_bytes:
                chunks.append(chunk)
            more = message.get("more_body", False)
        if size > self.max_body_bytes:  # read to the end but not kept, so the client reads the 413
            message = f"The request body is larger than {self.max_body_bytes} bytes."
            await send_error(send, 413, message)
            return
        body = b"".join(chunks)
        if body and headers.get(b"content-type", b"").startswith(b"application/json"):
            problem = self._problem(scope, body)
            if problem:
                await send_error(send, 400, problem)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, for streaming responses
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _problem(self, scope: Scope, body: bytes) -> str | None:
        try:
            request = json.loads(body)
        except ValueError:
            return None  # vLLM answers malformed JSON with a 400 of its own
        if not isinstance(request, dict):
            return f"The request body must be a JSON object, not {_json_type(request)}."
        for token in _token_ids(request.get("prompt")):
            if token < 0:
                return f"The prompt has the token id {token}: token ids are not negative."
        if self.max_model_len is None:
            state = scope["app"].state
            vllm_config = getattr(state, "vllm_config", None)
            if vllm_config is not None:
                self.max_model_len = vllm_config.model_config.max_model_len
        limit = self.max_model_len
        for field in ("max_tokens", "max_completion_tokens"):
            tokens = request.get(field)
            if limit is not None and _is_int(tokens) and tokens > limit:
                return (
                    f"{field}={tokens} is more than the model's maximum context length of "
                    f"{limit} tokens."
                )
        bias = request.get("logit_bias")
        if isinstance(bias, dict):
            for key, value in bias.items():
                if not key.lstrip("-").isdigit():
                    return f"logit_bias keys are token ids (integers), got {key!r}."
                if isinstance(value, float) and not math.isfinite(value):
                    return f"logit_bias values are finite numbers, got {value} for {key}."
        stop = request.get("stop")
        if isinstance(stop, list) and len(stop) > MAX_STOP_STRINGS:
            return f"stop has {len(stop)} strings, more than {MAX_STOP_STRINGS}."
        return None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_ids(prompt: Any) -> list[int]:
    """The token ids of a prompt given as ids, or as a batch of them; [] for text."""
    if not isinstance(prompt, list):
        return []
    ids = [t for t in prompt if _is_int(t)]
    for item in prompt:
        if isinstance(item, list):
            ids += [t for t in item if _is_int(t)]
    return ids


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")
