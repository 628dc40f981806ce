"""Every patch this plugin knows, declared as data.

Each topic package declares its patches in its ``__init__`` without importing
vLLM. The implementations live in modules keyed by the releases they serve
(``before_0_24.py`` serves releases before 0.24) and are imported only when a
patch applies to the detected release. Installed as ``vllm_ascend_compat.patches``.
"""

from vllm_ascend_compat.patches import (
    bad_words,
    custom_ops,
    device_sync,
    engine_selection,
    engine_shutdown,
    graceful_shutdown,
    linear_weights,
    lora,
    mla_prefill,
    ngram,
    prompt_logprobs,
    request_guard,
    request_validation,
    sampling_params,
    spec_decode,
    stop_checks,
    stop_strings,
    triton_kernels,
)
from vllm_ascend_compat.patching import Patch

ALL: tuple[Patch, ...] = (
    *engine_selection.PATCHES,
    *custom_ops.PATCHES,
    *device_sync.PATCHES,
    *engine_shutdown.PATCHES,
    *graceful_shutdown.PATCHES,
    *sampling_params.PATCHES,
    *bad_words.PATCHES,
    *request_guard.PATCHES,
    *request_validation.PATCHES,
    *lora.PATCHES,
    *ngram.PATCHES,
    *prompt_logprobs.PATCHES,
    *stop_checks.PATCHES,
    *stop_strings.PATCHES,
    *triton_kernels.PATCHES,
    *linear_weights.PATCHES,
    *mla_prefill.PATCHES,
    *spec_decode.PATCHES,
)
