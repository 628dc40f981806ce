"""SIGTERM under load: a bounded drain of the API server's requests in flight, on every
release.

Before 0.18.0 the API server's signal handler cancels the HTTP server, shuts the engine
down, then waits with no time limit for the open connections: the requests in flight get
no answer, and the process stays up as long as their clients wait. 0.18.0 brought the
shutdown timeout (PRs 34730, 36666: ``--shutdown-timeout``, default 0: abort at once).
The backport gives the earlier releases the same: on SIGTERM or SIGINT new requests get a
503, the requests in flight finish for up to ``VLLM_ASCEND_COMPAT_SHUTDOWN_TIMEOUT``
seconds (default 0, as upstream), the rest get a 503 or, mid-stream, an error event, and
only then does vLLM's own shutdown run.

From 0.18.0 on vLLM drains the engine, not the HTTP requests. On 0.18.0 (uvicorn's own
signal handler also runs, up to 0.27) a request arriving at the signal got an empty 200.
From 0.28.0 on (NoSignalServer) the HTTP server takes requests throughout the engine
drain: on 0.33.0, with ``--shutdown-timeout 30``, one arriving then got a 500 ("cannot
schedule new futures after shutdown"), as did some in flight. The hardening drains the
HTTP requests the same way first, for ``--shutdown-timeout`` seconds.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

HARDENING_REASON = (
    "On a signal vLLM shuts the engine down while the HTTP server still takes requests: "
    "those being preprocessed fail with a 500 and new ones are accepted. Drain the HTTP "
    "requests, as the backport does, before the engine."
)
HARDENING_REMOVE_WHEN = "upstream stops taking requests before it shuts the engine down"
SHUTS_THE_ENGINE_DOWN = "engine_client.shutdown, timeout=timeout"

PATCHES = (
    Patch(
        id="drain-on-sigterm",
        target="vllm.entrypoints.launcher:serve_http",
        versions="<0.18.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_18:drain_on_sigterm",
        reason=(
            "On SIGTERM the API server shuts the engine down and then waits, with no time "
            "limit, for the open connections: in-flight requests get no answer and the "
            "process does not exit while their clients wait. Drain them, bounded, first."
        ),
        upstream="https://github.com/vllm-project/vllm/pull/36666",
        remove_when="every supported line is 0.18.0 or newer",
        needs="server_task.cancel()",
        fixed_by="shutdown_timeout",
    ),
    Patch(
        id="drain-before-engine-shutdown",
        target="vllm.entrypoints.launcher:serve_http",
        versions=">=0.18.0,<0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_29:drain_before_engine_shutdown",
        reason=HARDENING_REASON,
        upstream="hardening",
        remove_when=HARDENING_REMOVE_WHEN,
        needs=SHUTS_THE_ENGINE_DOWN,
    ),
    Patch(
        id="drain-before-engine-shutdown-launchers",
        target="vllm.entrypoints.launchers.launcher:serve_http",
        versions=">=0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.since_0_29:drain_before_engine_shutdown",
        reason=HARDENING_REASON,
        upstream="hardening",
        remove_when=HARDENING_REMOVE_WHEN,
        needs=SHUTS_THE_ENGINE_DOWN,
    ),
)
