"""A vLLM release read from its released source (sdist, wheel or tree), never imported.

The static contract (:mod:`vllm_ascend_compat.contract`) asks it where a name is
defined and with which parameters, for every release of the window, in seconds
and without installing any of them. Lookup follows what Python would do at run
time as far as source can tell: module bindings (``def``, ``class``, assignment,
``from x import y`` re-exports), class bodies and their bases, submodules, and a
decorator's keyword argument for an attribute of a decorated function (vLLM's
Triton dispatchers keep their kernel as ``kernel=``).
"""

from __future__ import annotations

import ast
import tarfile
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

Node = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.expr


@dataclass(frozen=True)
class Definition:
    module: str  # the module whose source holds the definition
    node: Node  # its ``def`` or ``class`` statement, or the assigned expression

    @property
    def shape(self) -> str | None:
        """Parameter names and kinds, as :func:`patching.parameter_shape` prints them."""
        if not isinstance(self.node, ast.FunctionDef | ast.AsyncFunctionDef):
            return None
        return arguments_shape(self.node.args)


def arguments_shape(args: ast.arguments) -> str:
    parts = [a.arg for a in args.posonlyargs]
    if args.posonlyargs:
        parts.append("/")
    parts += [a.arg for a in args.args]
    if args.vararg:
        parts.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        parts.append("*")
    parts += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        parts.append("**" + args.kwarg.arg)
    return "(" + ", ".join(parts) + ")"


class ReleaseSource:
    """The ``vllm`` package of one release, from an sdist (.tar.gz), a wheel or a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._trees: dict[str, ast.Module | None] = {}
        self._packages: set[str] = set()

    @cached_property
    def _files(self) -> dict[str, str]:
        """Module name -> member name (archive) or path (folder), for every ``vllm`` module."""
        if self.path.is_dir():
            names = [str(p.relative_to(self.path)) for p in self.path.rglob("*.py")]
        elif self.path.suffix == ".whl":
            with zipfile.ZipFile(self.path) as archive:
                names = archive.namelist()
        else:
            with tarfile.open(self.path) as archive:
                names = archive.getnames()
        files: dict[str, str] = {}
        for name in names:
            parts = name.split("/")
            if not name.endswith(".py") or "vllm" not in parts:
                continue
            parts = parts[parts.index("vllm") :]  # sdists nest the package one level down
            if parts[-1] == "__init__.py":
                parts = parts[:-1]
                self._packages.add(".".join(parts))
            else:
                parts[-1] = parts[-1][:-3]
            files.setdefault(".".join(parts), name)
        return files

    @cached_property
    def _texts(self) -> dict[str, str]:
        """Every module's text, read in one pass over the archive."""
        wanted = {member: module for module, member in self._files.items()}
        texts: dict[str, str] = {}
        if self.path.is_dir():
            for member, module in wanted.items():
                texts[module] = (self.path / member).read_text(errors="replace")
        elif self.path.suffix == ".whl":
            with zipfile.ZipFile(self.path) as archive:
                for member, module in wanted.items():
                    texts[module] = archive.read(member).decode(errors="replace")
        else:
            with tarfile.open(self.path) as archive:
                for info in archive:
                    name = wanted.get(info.name)
                    extracted = archive.extractfile(info) if name else None
                    if name and extracted:
                        texts[name] = extracted.read().decode(errors="replace")
        return texts

    def has_module(self, module: str) -> bool:
        return module in self._files

    def text(self, module: str) -> str | None:
        return self._texts.get(module)

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            text = self.text(module)
            self._trees[module] = ast.parse(text) if text is not None else None
        return self._trees[module]

    def segment(self, definition: Definition) -> str:
        """The source text of a definition."""
        return ast.get_source_segment(self.text(definition.module) or "", definition.node) or ""

    # --- lookup ------------------------------------------------------------------------

    def lookup(self, module: str, path: list[str]) -> Definition | None:
        """``module:A.b.c`` as getattr would find it, or None where the source lacks it."""
        found = self._module_attr(module, path[0], depth=0)
        for name in path[1:]:
            if found is None:
                return None
            found = self.member(found, name, depth=0)
        return found

    def _module_attr(self, module: str, name: str, depth: int) -> Definition | None:
        if depth > 12:
            return None
        tree = self.tree(module)
        binding = _bindings(tree).get(name) if tree is not None else None
        if binding is None:
            return self._as_module(f"{module}.{name}")
        if isinstance(binding, ast.ImportFrom):
            source = _absolute(module, binding, module in self._packages)
            original = next(a.name for a in binding.names if (a.asname or a.name) == name)
            return self._module_attr(source, original, depth + 1) or self._as_module(
                f"{source}.{original}"
            )
        if isinstance(binding, ast.Import):
            alias = next(a for a in binding.names if (a.asname or a.name.partition(".")[0]) == name)
            return self._as_module(alias.name if alias.asname else name)
        return Definition(module, _value(binding))

    def _as_module(self, module: str) -> Definition | None:
        tree = self.tree(module)
        return Definition(module, ast.Name(id=module)) if tree is not None else None

    def member(self, owner: Definition, name: str, depth: int) -> Definition | None:
        node = owner.node
        if isinstance(node, ast.Name) and self.has_module(node.id):  # a submodule
            return self._module_attr(node.id, name, depth + 1)
        if isinstance(node, ast.ClassDef):
            if depth > 12:
                return None
            for statement in node.body:
                if name in _bound_names(statement):
                    return Definition(owner.module, _value(statement))
            for base in node.bases:
                resolved = self._expression(owner.module, base)
                found = resolved and self.member(resolved, name, depth + 1)
                if found:
                    return found
            return None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == name:
                            return self._expression(owner.module, keyword.value)
        return None

    def _expression(self, module: str, node: ast.expr) -> Definition | None:
        """A base class or keyword value: a name or dotted attribute in ``module``."""
        if isinstance(node, ast.Name):
            return self._module_attr(module, node.id, depth=1)
        if isinstance(node, ast.Attribute):
            owner = self._expression(module, node.value)
            return owner and self.member(owner, node.attr, depth=1)
        if isinstance(node, ast.Subscript):  # Generic[T] and friends
            return self._expression(module, node.value)
        return None


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _bound_names(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Assign):
        return {t.id for t in statement.targets if isinstance(t, ast.Name)}
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return {statement.target.id}
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return {a.asname or a.name.partition(".")[0] for a in statement.names}
    return set()


def _value(statement: ast.stmt) -> Node:
    if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
        return statement.value
    assert isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    return statement


def _bindings(tree: ast.Module) -> dict[str, ast.stmt]:
    """A module's top-level names; inside ``if``/``try`` the first binding wins, as the
    branch vLLM takes on a CUDA or CPU machine is written first, its fallback after."""
    found: dict[str, ast.stmt] = {}

    def visit(statements: list[ast.stmt], conditional: bool) -> None:
        for statement in statements:
            if isinstance(statement, ast.If):
                visit(statement.body, True)
                visit(statement.orelse, True)
            elif isinstance(statement, ast.Try):
                visit(statement.body, True)
                for handler in statement.handlers:
                    visit(handler.body, True)
            for name in _bound_names(statement):
                if name in found and conditional:
                    continue
                if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is None:
                    continue
                found[name] = statement

    visit(tree.body, False)
    return found
