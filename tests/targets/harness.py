"""What each fresh-interpreter registry case starts from."""

from packaging.version import Version

from vllm_ascend_compat.patching import (  # noqa: F401  (re-exported for the cases)
    Kind,
    Patch,
    PatchError,
    Phase,
    Status,
    apply,
    report,
    unpatch,
)

RELEASE = Version("0.11.0")


def make(patch_id, target, kind=Kind.REPLACE, impl="shout", versions=">=0.9", **extra):
    return Patch(
        id=patch_id,
        target=f"targets.sample_target:{target}",
        versions=versions,
        phase=Phase.EVERY_PROCESS,
        kind=kind,
        impl=f"targets.sample_impls:{impl}",
        reason="test",
        upstream="NPU only",
        remove_when="never",
        **extra,
    )


def run(*patches):
    apply(patches, RELEASE, known_ids=[p.id for p in patches] + ["other"])


def status():
    return {o.patch_id: o.status for o in report()}
