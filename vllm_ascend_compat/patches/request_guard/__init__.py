"""A guard in front of vLLM's OpenAI server: requests no release may answer with a 500, a
stall or a misleading message are refused at the HTTP edge with a 4xx that names the
problem, before any of vLLM's code reads them.

A hardening patch: on every release of the window some of these inputs get a 500 (a JSON
body that is not an object, under FastAPI 0.165; negative prompt token ids up to 0.32), a
400 that names the wrong thing (``max_tokens=10**9``: "maximum context length is
-999999744 tokens"; a non-numeric ``logit_bias`` key) or a 200 (a NaN ``logit_bias``), and
none limits the size of a request body. The app factory moved in 0.29.0.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

REASON = (
    "vLLM's OpenAI server answers some malformed requests with a 500 (a JSON body that is "
    "not an object; a negative prompt token id), a misleading 400 (max_tokens=10**9), or a "
    "200 (a NaN logit_bias), and reads a request body of any size. The guard refuses them "
    "at the HTTP edge: 413 above VLLM_ASCEND_COMPAT_MAX_BODY_BYTES, 400 naming the field."
)
UPSTREAM = "hardening"  # vLLM 0.33.0 still takes a NaN logit_bias and a body of any size
REMOVE_WHEN = "upstream validates these inputs and limits the body size on every supported line"

PATCHES = (
    Patch(
        id="openai-request-guard",
        target="vllm.entrypoints.openai.api_server:build_app",
        versions="<0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.before_0_29:add_request_guard",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN,
    ),
    Patch(
        id="openai-request-guard-launchers",
        target="vllm.entrypoints.launchers.app:build_app",
        versions=">=0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.WRAP,
        impl=f"{__name__}.since_0_29:add_request_guard",
        reason=REASON,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN,
    ),
)
