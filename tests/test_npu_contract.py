"""Every torch_npu op the project calls exists, with every argument it passes by name.

torch_npu cannot be imported here (no CANN runtime), so the schemas are read from
the wheel without importing it: the schema strings its shared libraries embed,
and, for the ATB ops whose schemas are not stored as plain strings, the C++
declarations of its op-plugin header.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.release_independent
MANIFEST = tomllib.loads((Path(__file__).with_name("torch_npu_calls.toml")).read_text())["call"]
SCHEMA = re.compile(rb"((?:npu_|_npu_)\w+)(?:\.\w+)?\(([^()]*)\) -> [^\x00\n]+")
DECLARATION = re.compile(r"TORCH_NPU_API\s+[\w:<>&, ]+?\s+&?(\w+)\(([^;]*)\);")


@dataclass
class Schema:
    positional: list[str] = field(default_factory=list)
    keyword_only: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return set(self.positional) | set(self.keyword_only)


def _split(arguments: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in arguments:
        depth += (char in "[(" and 1) or ((char in "])" and -1) or 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def _parse_schema(arguments: str) -> Schema:
    schema, keyword_only = Schema(), False
    for part in _split(arguments):
        if part == "*":
            keyword_only = True
            continue
        name = part.split("=")[0].split()[-1]
        (schema.keyword_only if keyword_only else schema.positional).append(name)
    return schema


def _parse_declaration(parameters: str) -> Schema:
    names = [re.findall(r"(\w+)\s*$", p.split("=")[0])[0] for p in _split(parameters)]
    return Schema(positional=names)


@pytest.fixture(scope="module")
def schemas() -> dict[str, Schema]:
    wheel = os.environ.get("VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL")
    if not wheel or not Path(wheel).exists():
        pytest.skip(
            "needs the torch_npu wheel: nox downloads it (VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL)"
        )
    found: dict[str, Schema] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith("AtbOpsInterface.h"):
                text = archive.read(name).decode()
                for op, params in DECLARATION.findall(text):
                    found.setdefault(op, _parse_declaration(params))
        for name in archive.namelist():
            if name.startswith("torch_npu/lib/") and name.endswith(".so"):
                for op, args in SCHEMA.findall(archive.read(name)):
                    found[op.decode()] = _parse_schema(args.decode())
    assert len(found) > 200, f"only {len(found)} schemas found: the wheel layout changed"
    return found


@pytest.mark.parametrize("call", MANIFEST, ids=[c["op"] for c in MANIFEST])
def test_called_op_exists_with_every_named_argument(schemas: dict[str, Schema], call: dict) -> None:
    assert call["op"] in schemas, f"torch_npu has no op {call['op']}"
    schema = schemas[call["op"]]
    missing = set(call["names"]) - schema.names
    assert not missing, f"{call['op']} has no argument(s) {sorted(missing)}; it takes {schema}"
    assert call.get("positional", 0) <= len(schema.positional), schema


def test_the_schema_reader_finds_known_signatures(schemas: dict[str, Schema]) -> None:
    assert schemas["npu_rms_norm"].positional == ["input", "gamma", "epsilon"]
    assert "slot_indices" in schemas["_npu_reshape_and_cache"].names


def _python_calls() -> set[tuple[str, str, int, frozenset[str]]]:
    calls = set()
    for path in sorted((REPO_ROOT / "vllm_ascend_compat").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch_npu"
            ):
                names = frozenset(k.arg for k in node.keywords if k.arg)
                where = str(path.relative_to(REPO_ROOT))
                calls.add((node.func.attr, where, len(node.args), names))
    return calls


def _cpp_calls() -> set[tuple[str, str, int, frozenset[str]]]:
    calls = set()
    for path in sorted((REPO_ROOT / "vllm_ascend_compat" / "csrc").glob("*.cpp")):
        text = path.read_text()
        for op, body in re.findall(r'call_npu\(\s*"\w+::(\w+)",\s*(\{.*?\})\);', text, re.S):
            names = frozenset(re.findall(r'\{"(\w+)",', body))
            calls.add((op, str(path.relative_to(REPO_ROOT)), 0, names))
    return calls


def test_manifest_lists_exactly_the_calls_in_the_code() -> None:
    in_code = _python_calls() | _cpp_calls()
    listed = {
        (c["op"], c["where"], c.get("positional", 0), frozenset(c["names"])) for c in MANIFEST
    }
    assert in_code == listed, (
        f"calls not in the manifest: {sorted(in_code - listed)}\n"
        f"manifest entries not in the code: {sorted(listed - in_code)}"
    )
