"""The static contract: one vLLM release's released source against this plugin.

Read from the release's sdist or wheel (:class:`source.ReleaseSource`), with
nothing installed, for every release of the window:

- every patch in range finds its target, with its pinned signature and, where the
  patch declares one, its ``needs`` fragment (the code the patch exists for);
- every patch out of range is shown not to be needed: its target is absent, its
  signature differs, the code it exists for is gone (``needs`` absent: the fix is
  in), or an in-range patch takes the same definition;
- every vLLM name the core imports exists (for imports in a ``try`` or an ``if``,
  one branch's names), and every method the core overrides accepts every call
  vLLM's own method of that release accepts.

``python3 run_nox.py -s contract`` runs it for the whole window;
``vllm-ascend-compat contract`` for one source (a distributor's patched tree, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import Version

from vllm_ascend_compat.patching import Kind, Patch
from vllm_ascend_compat.source import Definition, ReleaseSource

CORE = Path(__file__).parent
# Modules that are not the core's runtime surface: the offline tools import only
# stable entry points. A patch's modules are checked on the releases the patch serves.
NOT_CORE = {"contract", "source", "tiny_model", "quantize", "demo", "cli"}
# CustomOp dispatches forward() to forward_oot with forward_native's arguments.
DISPATCHED_AS = {"forward_oot": "forward_native"}
# Overrides vLLM never calls with its base's full signature, and why.
NOT_CALLED_AS_BASE = {
    "AscendQuantConfig.__init__": "vLLM builds quantization configs through from_config",
    "AscendCompatLlamaForCausalLM.__init__": (
        "vLLM's model loader passes vllm_config and prefix; layer_type is for subclasses"
    ),
    "AscendUnquantizedFusedMoEMethod.forward_oot": (
        "the fused-MoE layer calls it with (layer, x, router_logits, ...) where the method is "
        "not monolithic, apply_monolithic where it is, not with forward_native's arguments"
    ),
}


@dataclass(frozen=True)
class Finding:
    subject: str  # "patch <id>", "import vllm.x:Name", "override Class.method"
    ok: bool
    detail: str


# --- patches --------------------------------------------------------------------------


def check_patches(src: ReleaseSource, release: Version, patches: Iterable[Patch]) -> list[Finding]:
    patches = list(patches)
    found = {p.id: src.lookup(p.module, p.attr_path) for p in patches}
    taken = {
        (d.module, id(d.node)): p.id
        for p in patches
        if p.applies_to(release) and (d := found[p.id]) is not None
    }
    return [_check_patch(src, release, p, found[p.id], taken) for p in patches]


def _has(src: ReleaseSource, target: Definition, fragment: str | tuple[str, str]) -> bool:
    """Whether the fragment is in the target's source (or in the named definition's)."""
    if isinstance(fragment, str):
        return fragment in src.segment(target)
    module, _, path = fragment[0].partition(":")
    site = src.lookup(module, path.split("."))
    return site is not None and fragment[1] in src.segment(site)


def _check_patch(
    src: ReleaseSource,
    release: Version,
    patch: Patch,
    target: Definition | None,
    taken: dict[tuple[str, int], str],
) -> Finding:
    subject = f"patch {patch.id}"
    shape = target.shape if target is not None else None
    if patch.kind is Kind.ADD_MISSING:  # out of range, vLLM has it or has moved it since
        if patch.applies_to(release) and target is not None:
            return Finding(subject, False, f"in range but vLLM defines {patch.target} already")
        if patch.applies_to(release):
            return Finding(subject, True, "applies: adds what vLLM lacks")
        return Finding(subject, True, "not needed: out of range")
    if target is None:
        if patch.applies_to(release):
            return Finding(subject, False, f"in range but {patch.target} is not in the source")
        return Finding(subject, True, "not needed: target absent")
    fits = patch.signature in (None, shape)
    lacks = patch.needs is not None and not _has(src, target, patch.needs)
    fixed = patch.fixed_by is not None and _has(src, target, patch.fixed_by)
    if patch.applies_to(release):
        if not fits:
            return Finding(subject, False, f"in range but signature {shape} != {patch.signature}")
        if lacks:
            return Finding(subject, False, f"in range but the source lacks {patch.needs!r}")
        if fixed:
            return Finding(subject, False, f"in range but the source has {patch.fixed_by!r}")
        return Finding(subject, True, "applies: target and signature found")
    if not fits:
        return Finding(subject, True, f"not needed: signature is {shape}")
    if fixed:
        return Finding(subject, True, f"not needed: the source has the fix {patch.fixed_by!r}")
    if lacks:
        return Finding(subject, True, f"not needed: the source lacks {patch.needs!r}")
    owner = taken.get((target.module, id(target.node)))
    if owner is not None:
        return Finding(subject, True, f"not needed: {owner} takes the same definition")
    return Finding(
        subject,
        False,
        f"out of range ({patch.versions}) but the target is there with its signature and "
        "nothing in the source shows the patch is not needed: the range is too narrow, or "
        "the patch needs a `needs` or `fixed_by` fragment",
    )


# --- the core -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Import:
    module: str  # the vLLM module imported from
    name: str | None  # the name imported, None for ``import vllm.x``
    where: str  # "platform.py:13"
    group: tuple[str, int, int] | None  # (the try/if's place, branch, branches), None: always


@cache
def _core_modules() -> tuple[tuple[str, ast.Module], ...]:
    """The core's and the patches' modules, parsed once for every release checked."""
    return tuple(
        (str(path.relative_to(CORE)), ast.parse(path.read_text()))
        for path in sorted(CORE.rglob("*.py"))
        if path.stem not in NOT_CORE
    )


@cache
def core_imports() -> tuple[_Import, ...]:
    """Every vLLM import of the core's and the patches' modules, with its try/if branch."""
    imports: list[_Import] = []
    for file, tree in _core_modules():
        for node, group in _walk(tree.body, None, file):
            where = f"{file}:{node.lineno}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
                assert node.module is not None
                imports += [_Import(node.module, a.name, where, group) for a in node.names]
            elif isinstance(node, ast.Import):
                imports += [
                    _Import(a.name, None, where, group)
                    for a in node.names
                    if a.name.split(".")[0] == "vllm"
                ]
    return tuple(imports)


def _walk(
    statements: list[ast.stmt], group: tuple[str, int, int] | None, file: str
) -> Iterator[tuple[ast.stmt, tuple[str, int, int] | None]]:
    """Each statement with the try/if branch it sits in, named by the file and line of the
    try/if (a stable name: node ids are reused once a file's tree is freed)."""
    for statement in statements:
        if isinstance(statement, ast.Try):
            branches = [statement.body, *(h.body for h in statement.handlers)]
        elif isinstance(statement, ast.If):
            branches = [statement.body, statement.orelse]
        else:
            branches = []
        place = f"{file}:{statement.lineno}:{statement.col_offset}"
        for index, branch in enumerate(branches):
            yield from _walk(branch, (place, index, len(branches)), file)
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield from _walk(statement.body, group, file)
        elif not branches:
            yield statement, group


def _resolves(src: ReleaseSource, item: _Import) -> bool:
    if item.name is None:
        return src.has_module(item.module)
    if src.lookup(item.module, [item.name]) is not None:
        return True
    text = src.text(item.module) or ""  # a module-level __getattr__ serving the name lazily
    return "def __getattr__" in text and repr(item.name) in text.replace('"', "'")


def _serves(item: _Import, release: Version, patches: list[Patch]) -> bool:
    """Whether the module holding an import loads on ``release``: the core always; a
    patch module when a patch of its topic applies (its impl module, or a shared one)."""
    parts = item.where.split(":")[0].removesuffix(".py").split("/")
    if parts[0] != "patches":
        return True
    module = ".".join(["vllm_ascend_compat", *parts])
    topic = module.rsplit(".", 1)[0]
    return any(
        p.applies_to(release)
        and (p.impl.split(":")[0] == module or not parts[-1].startswith(("before_", "since_")))
        and p.impl.split(":")[0].rsplit(".", 1)[0] == topic
        for p in patches
    )


def check_imports(src: ReleaseSource, release: Version, patches: Iterable[Patch]) -> list[Finding]:
    patches = list(patches)
    imports = [item for item in core_imports() if _serves(item, release, patches)]
    ok = {item: _resolves(src, item) for item in imports}
    findings = []
    for item in imports:
        subject = f"import {item.module}:{item.name}" if item.name else f"import {item.module}"
        if ok[item]:
            findings.append(Finding(subject, True, f"{item.where}: found"))
        elif item.group is not None and _some_branch_resolves(item.group[0], imports, ok):
            findings.append(Finding(subject, True, f"{item.where}: absent; another branch serves"))
        else:
            findings.append(Finding(subject, False, f"{item.where}: not in the source"))
    return findings


def _some_branch_resolves(group: str, imports: list[_Import], ok: dict[_Import, bool]) -> bool:
    """One branch of the try/if finds all its names (a branch with none always does)."""
    mine = [item for item in imports if item.group is not None and item.group[0] == group]
    branches: dict[int, list[bool]] = {index: [] for index in range(mine[0].group[2])}  # type: ignore[index]
    for item in mine:
        branches[item.group[1]].append(ok[item])  # type: ignore[index]
    return any(all(results) for results in branches.values())


def check_overrides(src: ReleaseSource) -> list[Finding]:
    """Each core method that overrides a vLLM method takes every call vLLM's accepts."""
    findings = []
    for _, module in _core_modules():
        for cls in (n for n in module.body if isinstance(n, ast.ClassDef)):
            bases = [b for b in (_vllm_base(src, module, base) for base in cls.bases) if b]
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef) or not bases:
                    continue
                subject = f"override {cls.name}.{method.name}"
                if f"{cls.name}.{method.name}" in NOT_CALLED_AS_BASE:
                    continue
                name = DISPATCHED_AS.get(method.name, method.name)
                theirs = next((d for base in bases if (d := src.member(base, name, 0))), None)
                if theirs is None or not isinstance(
                    theirs.node, ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    continue
                ours = method.args
                static = [_is_static(f) for f in (method, theirs.node)]
                if static == [False, True]:
                    ours = ast.arguments(  # called on the instance: self stands for nothing
                        posonlyargs=[], args=(ours.posonlyargs + ours.args)[1:],
                        vararg=ours.vararg, kwonlyargs=ours.kwonlyargs,
                        kw_defaults=ours.kw_defaults, kwarg=ours.kwarg, defaults=ours.defaults,
                    )  # fmt: skip
                problem = incompatibility(ours, theirs.node.args)
                detail = problem or f"accepts {theirs.shape} of {theirs.module}"
                findings.append(Finding(subject, problem is None, detail))
    return findings


def _is_static(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)


def _vllm_base(src: ReleaseSource, module: ast.Module, base: ast.expr) -> Definition | None:
    """A base class of a core class, when it is a vLLM class of this release."""
    node = base.value if isinstance(base, ast.Subscript) else base
    if not isinstance(node, ast.Name):
        return None
    for statement, _ in _walk(module.body, None, ""):
        if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("vllm"):
            for alias in statement.names:
                if (alias.asname or alias.name) == node.id:
                    found = src.lookup(statement.module or "", [alias.name])
                    if found is not None and isinstance(found.node, ast.ClassDef):
                        return found
    return None


def incompatibility(ours: ast.arguments, theirs: ast.arguments) -> str | None:
    """Why a call vLLM's signature accepts could fail on ours, or None."""
    our_positional = [a.arg for a in ours.posonlyargs + ours.args]
    their_positional = [a.arg for a in theirs.posonlyargs + theirs.args]
    our_names = set(our_positional[len(ours.posonlyargs) :]) | {a.arg for a in ours.kwonlyargs}
    for index, name in enumerate(their_positional):
        if index >= len(our_positional) and ours.vararg is None:
            return f"vLLM passes {name!r} at position {index}; ours takes {len(our_positional)}"
        keyword_ok = name in our_names or ours.kwarg is not None
        if index >= len(theirs.posonlyargs) and index > 0 and not keyword_ok:
            return f"vLLM's {name!r} may come by keyword; ours has no such parameter"
    for arg in theirs.kwonlyargs:
        if arg.arg not in our_names and ours.kwarg is None:
            return f"vLLM's keyword-only {arg.arg!r} is not accepted"
    if theirs.vararg is not None and ours.vararg is None:
        return f"vLLM's method takes *{theirs.vararg.arg}; ours does not"
    if theirs.kwarg is not None and ours.kwarg is None:
        return f"vLLM's method takes **{theirs.kwarg.arg}; ours does not"
    required = our_positional[: len(our_positional) - len(ours.defaults)]
    extra = [n for n in required if n not in their_positional]
    extra += [a.arg for a, d in zip(ours.kwonlyargs, ours.kw_defaults, strict=True) if d is None]
    extra = [n for n in extra if n not in {a.arg for a in theirs.kwonlyargs}]
    if extra:
        return f"ours requires {', '.join(extra)}, which vLLM's callers do not pass"
    return None


def check_release(src: ReleaseSource, release: Version, patches: Iterable[Patch]) -> list[Finding]:
    patches = list(patches)
    return (
        check_patches(src, release, patches)
        + check_imports(src, release, patches)
        + check_overrides(src)
    )
