"""The engine client's shutdown of 0.9.0, whose signal may find its receiver gone."""

from typing import Any

import zmq


def shutdown_signal_with_timeout(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Once, at shutdown: sockets made from now on give up sending after a second."""
    instance.ctx.setsockopt(zmq.SNDTIMEO, 1000)
    try:
        return wrapped(*args, **kwargs)
    except zmq.Again:
        return None  # the output thread had exited: nobody to tell
