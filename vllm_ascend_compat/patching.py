"""The patch registry: declarations as data, and the one place that applies them.

A :class:`Patch` says what it changes, for which releases, when, why and until
when. Its implementation lives in a release-keyed module named by ``impl`` and is
imported only when the patch applies to the detected release, so no module ever
imports a vLLM name the running release lacks.

Application is lazy (a post-import hook when the target module is not imported
yet), idempotent, reversible (the exact original object, descriptor kind
included, is restored), alias-safe (modules that did ``from x import y`` are
rebound too), atomic per phase (a failed required patch rolls its phase back),
drift-checked and switchable by id. ``replace`` patches install a plain function
with no wrapper object, for hot paths; ``wrap`` patches use wrapt, for cold paths.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import wrapt
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vllm_ascend_compat import envs
from vllm_ascend_compat.log import logger


class Phase(enum.Enum):
    PLATFORM = "platform"  # main process, when the platform plugin activates
    EVERY_PROCESS = "every-process"  # every vLLM process, through the general plugin
    WORKER = "worker"  # each worker, when it starts


class Kind(enum.Enum):
    REPLACE = "replace"  # impl(original) returns a plain replacement: no wrapper, hot-path safe
    WRAP = "wrap"  # impl(wrapped, instance, args, kwargs) is a wrapt wrapper: cold paths only
    ADD_MISSING = "add-missing"  # impl is the object to add; the owner must not define it yet


@dataclass(frozen=True)
class Patch:
    id: str
    target: str  # "package.module:Attr.path"
    versions: str  # PEP 440 specifier set of the vLLM releases that need it
    phase: Phase
    kind: Kind
    impl: str  # "package.module:name", imported only when the patch applies
    reason: str
    upstream: str  # URL of the upstream PR or issue; "NPU only"; "hardening": upstream has none
    remove_when: str
    optional: bool = False
    signature: str | None = None  # expected parameter shape of the target, e.g. "(self, x)"
    # Where the signature alone cannot tell the releases apart, source fragments that
    # do (the static contract checks them in every release of the window): ``needs``,
    # what the patch exists for (the code a backport fixes), present wherever the patch
    # applies; ``fixed_by``, the upstream fix, absent wherever it applies. Each is a
    # fragment of the target's source, or ("module:Attr.path", fragment) elsewhere.
    needs: str | tuple[str, str] | None = None
    fixed_by: str | tuple[str, str] | None = None

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attr_path(self) -> list[str]:
        return self.target.partition(":")[2].split(".")

    def applies_to(self, release: Version) -> bool:
        return SpecifierSet(self.versions).contains(release, prereleases=True)


class PatchError(RuntimeError):
    """A required patch could not be applied; the message names patch, target, release."""


class Status(enum.Enum):
    APPLIED = "applied"
    PENDING = "pending"  # waits for its target module to be imported
    OUT_OF_RANGE = "out-of-range"
    DISABLED = "disabled"
    FAILED = "failed"  # an optional patch that could not apply
    ROLLED_BACK = "rolled-back"
    REMOVED = "removed"  # unpatched


@dataclass
class Outcome:
    patch_id: str
    status: Status
    detail: str = ""
    aliases: list[str] = field(default_factory=list)


@dataclass
class _Applied:
    patch: Patch
    owner: Any
    name: str
    original: Any  # the raw object from the owner's __dict__, or _MISSING
    had_own: bool
    installed: Any
    aliases: list[tuple[ModuleType, str]]


_MISSING = object()
_lock = threading.RLock()
_applied: dict[str, _Applied] = {}
_pending: dict[str, Version] = {}
# Post-import hooks that fired while their impl module was still being imported (it
# imports the target of its own patch): run again once that import is done.
_waiting: list[Callable[[], None]] = []
_report: dict[str, Outcome] = {}


def report() -> list[Outcome]:
    """What happened to each patch in this process, in the order first seen."""
    with _lock:
        return [Outcome(o.patch_id, o.status, o.detail, list(o.aliases)) for o in _report.values()]


def is_applied(patch_id: str) -> bool:
    return patch_id in _applied


def _record(patch_id: str, status: Status, detail: str = "", aliases: Iterable[str] = ()) -> None:
    _report[patch_id] = Outcome(patch_id, status, detail, list(aliases))


def disabled_ids(known: Iterable[str]) -> set[str]:
    """Ids disabled through the environment; an unknown id is an error, never ignored."""
    wanted = set(envs.id_list(envs.DISABLE_PATCHES))
    unknown = wanted - set(known)
    if unknown:
        raise PatchError(
            f"{envs.DISABLE_PATCHES} names unknown patch ids: {', '.join(sorted(unknown))}. "
            f"Known ids: {', '.join(sorted(known))}"
        )
    return wanted


def load_impl(patch: Patch) -> Any:
    module_name, _, name = patch.impl.partition(":")
    return getattr(importlib.import_module(module_name), name)


def resolve_target(patch: Patch) -> tuple[Any, str, Any, bool]:
    """Return (owner, attribute name, raw current object or _MISSING, owned by owner)."""
    owner: Any = sys.modules[patch.module]
    *parents, name = patch.attr_path
    for part in parents:
        owner = getattr(owner, part)
    raw = inspect.getattr_static(owner, name, _MISSING)
    own = name in vars(owner)
    return owner, name, raw, own


def parameter_shape(obj: Any) -> str:
    """Parameter names and kinds of a callable, without annotations or defaults."""
    func: Any = obj.fget if isinstance(obj, property) else obj
    if isinstance(func, staticmethod | classmethod):
        func = func.__func__
    if hasattr(func, "arg_names") and callable(getattr(func, "fn", None)):
        func = func.fn  # a Triton kernel (where triton imports): the function it compiles
    params = list(inspect.signature(func).parameters.values())
    parts: list[str] = []
    for i, p in enumerate(params):
        before = params[i - 1].kind if i else None
        if p.kind is p.KEYWORD_ONLY and before not in (p.KEYWORD_ONLY, p.VAR_POSITIONAL):
            parts.append("*")
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        parts.append(prefix + p.name)
        after = params[i + 1].kind if i + 1 < len(params) else None
        if p.kind is p.POSITIONAL_ONLY and after is not p.POSITIONAL_ONLY:
            parts.append("/")
    return "(" + ", ".join(parts) + ")"


def check_target(patch: Patch) -> str | None:
    """Why the patch cannot apply to the loaded target, or None when it can."""
    try:
        _, _, raw, own = resolve_target(patch)
    except (KeyError, AttributeError) as err:
        return f"target not found ({err})"
    if patch.kind is Kind.ADD_MISSING:  # an inherited attribute (object.__new__) may be added
        if own and patch.id not in _applied:
            return "target already exists: upstream added it, narrow the version range"
        return None
    if raw is _MISSING:
        return "target not found"
    if patch.signature is not None:
        current = _applied[patch.id].original if patch.id in _applied else raw
        shape = parameter_shape(current)
        if shape != patch.signature:
            return f"signature drift: expected {patch.signature}, found {shape}"
    return None


def _fail_message(patch: Patch, release: Version, cause: str) -> str:
    return (
        f"vllm-ascend-compat patch {patch.id!r} cannot apply on vLLM {release}: "
        f"target {patch.target}: {cause}"
    )


def _build(patch: Patch, raw: Any) -> Any:
    impl = load_impl(patch)
    if patch.kind is Kind.ADD_MISSING:
        return impl
    if isinstance(raw, property):
        fget = _build(patch, raw.fget)
        return property(fget, raw.fset, raw.fdel, raw.__doc__)
    if patch.kind is Kind.WRAP:
        return wrapt.FunctionWrapper(raw, impl)
    if isinstance(raw, staticmethod | classmethod):
        return type(raw)(impl(raw.__func__))
    return impl(raw)


def _sweep_aliases(
    original: Any, replacement: Any, skip: tuple[ModuleType, str]
) -> list[tuple[ModuleType, str]]:
    """Rebind the globals that still hold the original in the target's own package.

    Only modules of that package (``vllm.*`` for vLLM targets) are swept: user code
    that kept a reference on purpose is left alone.
    """
    package = skip[0].__name__.partition(".")[0]
    rebound = []
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if name.partition(".")[0] != package or not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if value is original and (module, key) != skip:
                namespace[key] = replacement
                rebound.append((module, key))
    return rebound


def _apply_one(patch: Patch, release: Version) -> None:
    problem = check_target(patch)
    if problem:
        raise PatchError(_fail_message(patch, release, problem))
    owner, name, raw, own = resolve_target(patch)
    try:
        installed = _build(patch, raw)
    except Exception as err:
        cause = f"building the patch failed: {err!r}"
        raise PatchError(_fail_message(patch, release, cause)) from err
    setattr(owner, name, installed)
    aliases: list[tuple[ModuleType, str]] = []
    if isinstance(owner, ModuleType) and patch.kind is not Kind.ADD_MISSING:
        aliases = _sweep_aliases(raw, installed, skip=(owner, name))
    _applied[patch.id] = _Applied(patch, owner, name, raw, own, installed, aliases)
    _record(
        patch.id,
        Status.APPLIED,
        aliases=[f"{module.__name__}.{key}" for module, key in aliases],
    )
    logger.debug("vllm-ascend-compat: applied patch %s to %s", patch.id, patch.target)


def _refuse_unstacking(ids: list[str]) -> None:
    """Two patches on one target stack; removing the lower one alone would drop both."""
    order = list(_applied)
    for patch_id in ids:
        if patch_id not in _applied:
            continue
        lower = _applied[patch_id]
        for later in order[order.index(patch_id) + 1 :]:
            upper = _applied[later]
            if later not in ids and (upper.owner, upper.name) == (lower.owner, lower.name):
                raise PatchError(
                    f"cannot unpatch {patch_id!r} alone: {later!r} is stacked on the same "
                    f"target {lower.patch.target}; unpatch both"
                )


def _unpatch_one(patch_id: str, status: Status = Status.REMOVED) -> None:
    state = _applied.pop(patch_id)
    if state.had_own:
        setattr(state.owner, state.name, state.original)
    else:
        delattr(state.owner, state.name)
    for module, key in state.aliases:
        if module.__dict__.get(key) is state.installed:
            module.__dict__[key] = state.original
    _record(patch_id, status)


def apply(patches: Iterable[Patch], release: Version, *, known_ids: Iterable[str]) -> None:
    """Apply the patches that fit ``release``; a failed required one rolls all back.

    Patches whose target module is not imported yet are applied by a post-import
    hook when it is. Applying a patch that is already applied does nothing.
    """
    patches = list(patches)
    with _lock:
        disabled = disabled_ids(known_ids)
        applied_now: list[str] = []
        for patch in patches:
            if patch.id in _applied or patch.id in _pending:
                continue
            if not patch.applies_to(release):
                _record(patch.id, Status.OUT_OF_RANGE, f"needs vLLM {patch.versions}")
                continue
            if patch.id in disabled:
                _record(patch.id, Status.DISABLED, f"listed in {envs.DISABLE_PATCHES}")
                continue
            if patch.module not in sys.modules:
                _pending[patch.id] = release
                _record(patch.id, Status.PENDING, f"waits for import of {patch.module}")
                wrapt.register_post_import_hook(_deferred(patch, patches), patch.module)
                continue
            try:
                _apply_one(patch, release)
                applied_now.append(patch.id)
            except PatchError as err:
                _handle_failure(patch, err, applied_now)
            _run_waiting()


def _handle_failure(patch: Patch, err: PatchError, applied_in_phase: list[str]) -> None:
    if patch.optional:
        _record(patch.id, Status.FAILED, f"optional: {err}")
        logger.warning("vllm-ascend-compat: optional %s", err)
        return
    for patch_id in reversed(applied_in_phase):
        if patch_id in _applied:
            _unpatch_one(patch_id, Status.ROLLED_BACK)
    _record(patch.id, Status.FAILED, str(err))
    raise err


def _impl_importing(patch: Patch) -> bool:
    """True while the patch's impl module is partway through its own imports."""
    module = sys.modules.get(patch.impl.partition(":")[0])
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _run_waiting() -> None:
    while _waiting:
        _waiting.pop(0)()


def _deferred(patch: Patch, phase_patches: list[Patch]) -> Callable[[ModuleType], None]:
    def apply_now() -> None:
        release = _pending.pop(patch.id, None)
        if release is None or patch.id in _applied:
            return  # unpatched before the import, or applied meanwhile
        try:
            _apply_one(patch, release)
        except PatchError as err:
            same_phase = [p.id for p in phase_patches if p.phase is patch.phase]
            for other in same_phase:
                _pending.pop(other, None)
            _handle_failure(patch, err, [i for i in same_phase if i in _applied])

    def hook(module: ModuleType) -> None:
        with _lock:
            if _impl_importing(patch):  # the impl is importing this target: after it
                _waiting.append(apply_now)
                return
            apply_now()
            _run_waiting()

    return hook


def unpatch(patch_ids: Iterable[str] | None = None) -> None:
    """Restore the exact original objects (all patches when ``patch_ids`` is None)."""
    with _lock:
        ids = list(_applied) + list(_pending) if patch_ids is None else list(patch_ids)
        _refuse_unstacking(ids)
        for patch_id in reversed(ids):
            if _pending.pop(patch_id, None) is not None:
                _record(patch_id, Status.REMOVED, "unpatched before its module was imported")
            elif patch_id in _applied:
                _unpatch_one(patch_id)
