"""The front end's shutdown of the V1 engine client, ``BackgroundResources.__call__``."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="engine-shutdown-signal-cannot-hang",
        target="vllm.v1.engine.core_client:BackgroundResources.__call__",
        versions="<0.9.1",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_9_1:shutdown_signal_with_timeout",
        reason=(
            "In 0.9.0 the sync client's output thread polls its shutdown socket for writing "
            "as well as reading, so it exits as soon as the front end connects to send the "
            "shutdown signal; the send then waits forever for a peer that is gone, and every "
            "LLM(...) script hangs at exit. 0.9.1 polls for reading only. Here the signal is "
            "sent with a one-second timeout, after which nobody is left to receive it."
        ),
        upstream="https://github.com/vllm-project/vllm/blob/v0.9.1/vllm/v1/engine/core_client.py",
        remove_when="the window starts at 0.9.1 or later",
        signature="(self)",
        needs=(
            "vllm.v1.engine.core_client:SyncMPClient.__init__",
            "poller.register(shutdown_socket)\n",
        ),
    ),
)
