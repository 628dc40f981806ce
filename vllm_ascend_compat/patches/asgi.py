"""What the serving patches share: putting an ASGI middleware outermost in vLLM's app, and
the OpenAI-style error it answers with."""

from __future__ import annotations

import json
from typing import Any

ERROR_TYPES = {400: "BadRequestError", 413: "RequestTooLargeError", 503: "ServiceUnavailableError"}


def add_outermost_middleware(app: Any, middleware: type, **options: Any) -> None:
    """Starlette's ``add_middleware`` where the app has not built its middleware stack yet;
    where it has (0.29+ build it in ``build_app``), the middleware goes around that stack."""
    if app.middleware_stack is None:
        app.add_middleware(middleware, **options)
    else:
        app.middleware_stack = middleware(app.middleware_stack, **options)


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": ERROR_TYPES[status], "param": None, "code": status}
    }


async def send_error(send: Any, status: int, message: str) -> None:
    """A whole OpenAI-style JSON error response."""
    payload = json.dumps(error_body(status, message)).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})
