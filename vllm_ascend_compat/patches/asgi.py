"""What the serving patches share: putting an ASGI middleware outermost in vLLM's app."""

from __future__ import annotations

from typing import Any


def add_outermost_middleware(app: Any, middleware: type, **options: Any) -> None:
    """Starlette's ``add_middleware`` where the app has not built its middleware stack yet;
    where it has (0.29+ build it in ``build_app``), the middleware goes around that stack."""
    if app.middleware_stack is None:
        app.add_middleware(middleware, **options)
    else:
        app.middleware_stack = middleware(app.middleware_stack, **options)
