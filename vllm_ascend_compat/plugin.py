"""vLLM's entry points into the plugin, and the patch phases they run.

vLLM calls both entry points in every process, sometimes more than once; both
are cheap after the first call. Nothing is patched when the plugin is inactive.
"""

from __future__ import annotations

from vllm_ascend_compat import activation, patching, release
from vllm_ascend_compat.log import logger

PLATFORM_CLASS = "vllm_ascend_compat.platform.NPUPlatform"
_logged_decision = False


def apply_phase(phase: patching.Phase) -> None:
    """Apply this release's patches of one phase (idempotent)."""
    from vllm_ascend_compat.patches import ALL

    detected = release.detect()
    patching.apply(
        [p for p in ALL if p.phase is phase],
        detected.release,
        known_ids=[p.id for p in ALL],
    )


def _active() -> bool:
    global _logged_decision
    decision = activation.decide()
    if not _logged_decision:
        _logged_decision = True
        state = "active" if decision.active else "inactive"
        logger.info("vllm-ascend-compat %s: %s", state, decision.reason)
    return decision.active


def platform_plugin() -> str | None:
    """``vllm.platform_plugins``: the platform class path when active, else None."""
    if not _active():
        return None
    try:
        apply_phase(patching.Phase.PLATFORM)
    except (release.ReleaseError, patching.PatchError) as err:
        # vLLM swallows exceptions from platform plugins; say it loudly first.
        logger.error("vllm-ascend-compat cannot load: %s", err)
        raise
    return PLATFORM_CLASS


def general_plugin() -> None:
    """``vllm.general_plugins``: the patches, model architectures and quantization method
    every vLLM process needs."""
    if _active():
        from vllm_ascend_compat import device, models, quantization

        device.current().init_process()
        apply_phase(patching.Phase.EVERY_PROCESS)
        models.register()
        quantization.register()
