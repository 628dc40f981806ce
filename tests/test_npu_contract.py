"""Every torch_npu op the project calls exists, with every argument it passes by name.

The schemas of the ops the project calls are the strings in
``emulator/torch_npu/schemas.toml``, the same ones the emulated npu device defines its ops
with; they are checked against the torch_npu wheel here (and regenerated from it by
``emulator/torch_npu/extract_schemas.py``). torch_npu cannot be imported here (no CANN
runtime), so the wheel is read without importing it: the schema strings its shared
libraries embed, and, for the ATB ops whose schemas are not stored as plain strings, the
C++ declarations of its op-plugin header.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.release_independent
MANIFEST = tomllib.loads((Path(__file__).with_name("torch_npu_calls.toml")).read_text())["call"]
SCHEMAS_TOML = REPO_ROOT / "emulator" / "torch_npu" / "schemas.toml"
SCHEMAS = tomllib.loads(SCHEMAS_TOML.read_text())["op"]


def _load_extractor():  # type: ignore[no-untyped-def]
    """emulator/torch_npu/extract_schemas.py, the script that wrote SCHEMAS_TOML (by path: the
    emulator is not an importable package here)."""
    spec = importlib.util.spec_from_file_location(
        "extract_schemas", SCHEMAS_TOML.with_name("extract_schemas.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXTRACT = _load_extractor()
SCHEMA = re.compile(rb"((?:npu_|_npu_)\w+)(\.\w+)?\(([^()]*)\) -> [^\x00\n]+")
DECLARATION = re.compile(r"TORCH_NPU_API\s+[\w:<>&, ]+?\s+&?(\w+)\(([^;]*)\);")


@dataclass
class Schema:
    positional: list[str] = field(default_factory=list)
    keyword_only: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return set(self.positional) | set(self.keyword_only)


def _parse_schema(arguments: str) -> Schema:
    schema, keyword_only = Schema(), False
    for part in EXTRACT.split_arguments(arguments):
        if part == "*":
            keyword_only = True
            continue
        name = part.split("=")[0].split()[-1]
        (schema.keyword_only if keyword_only else schema.positional).append(name)
    return schema


def _parse_declaration(parameters: str) -> Schema:
    names = [
        re.findall(r"(\w+)\s*$", p.split("=")[0])[0] for p in EXTRACT.split_arguments(parameters)
    ]
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
                for op, overload, args in SCHEMA.findall(archive.read(name)):
                    if not overload:  # the default overload, the one the plugin calls
                        found[op.decode()] = _parse_schema(args.decode())
    assert len(found) > 200, f"only {len(found)} schemas found: the wheel layout changed"
    return found


def _toml_schema(op: str) -> Schema:
    text = SCHEMAS[op]["schema"]
    return _parse_schema(text[text.index("(") + 1 : text.rindex(") ->")])


@pytest.mark.parametrize("call", MANIFEST, ids=[c["op"] for c in MANIFEST])
def test_called_op_exists_with_every_named_argument(call: dict) -> None:
    """Against schemas.toml, the strings the emulator defines the ops with."""
    assert call["op"] in SCHEMAS, f"schemas.toml has no op {call['op']}"
    schema = _toml_schema(call["op"])
    missing = set(call["names"]) - schema.names
    assert not missing, f"{call['op']} has no argument(s) {sorted(missing)}; it takes {schema}"
    assert call.get("positional", 0) <= len(schema.positional), schema


@pytest.mark.parametrize("call", MANIFEST, ids=[c["op"] for c in MANIFEST])
def test_schemas_toml_agrees_with_the_wheel(schemas: dict[str, Schema], call: dict) -> None:
    """The wheel's own strings (or header declarations) take the same arguments, in order."""
    assert call["op"] in schemas, f"torch_npu has no op {call['op']}"
    wheel, toml = schemas[call["op"]], _toml_schema(call["op"])
    assert wheel.positional + wheel.keyword_only == toml.positional + toml.keyword_only, (
        f"{call['op']}: wheel {wheel}, schemas.toml {toml}"
    )


def test_schemas_toml_strings_are_the_wheels() -> None:
    """The exact strings, rebuilt from the wheel by the script that wrote schemas.toml."""
    wheel = os.environ.get("VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL")
    if not wheel or not Path(wheel).exists():
        pytest.skip(
            "needs the torch_npu wheel: nox downloads it (VLLM_ASCEND_COMPAT_TORCH_NPU_WHEEL)"
        )
    if not shutil.which("objdump"):
        pytest.skip("needs objdump (binutils) to rebuild the ATB schema strings from the wheel")
    assert EXTRACT.extract(Path(wheel)) == SCHEMAS, "schemas.toml is stale: run extract_schemas.py"


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


# A call site's op and argument names: ``static const NpuCall call_npu("ns::op", {"a", ...});``
CPP_CALL = re.compile(r'NpuCall call_npu\(\s*"(\w+)::(\w+)",\s*(\{.*?\})\);', re.S)


def _cpp_calls() -> set[tuple[str, str, int, frozenset[str]]]:
    calls = set()
    for path in sorted((REPO_ROOT / "vllm_ascend_compat" / "csrc").glob("*.cpp")):
        text = path.read_text()
        for _, op, body in CPP_CALL.findall(text):
            names = frozenset(re.findall(r'"(\w+)"', body))
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


def test_cpp_calls_name_each_ops_namespace() -> None:
    """call_npu finds an op by its full name: npu:: for torch_npu's own ops, atb:: for the
    ATB ones, as schemas.toml records (and the emulator defines them)."""
    found = []
    for path in sorted((REPO_ROOT / "vllm_ascend_compat" / "csrc").glob("*.cpp")):
        for namespace, op, _ in CPP_CALL.findall(path.read_text()):
            assert op in SCHEMAS, f"{path.name}: {op} is not in schemas.toml"
            want = SCHEMAS[op]["namespace"]
            assert namespace == want, f"{path.name}: {namespace}::{op} should be {want}::{op}"
            found.append(op)
    assert found, "no call_npu calls found: the pattern no longer matches the C++"


def test_each_cpp_call_site_resolves_its_op_once() -> None:
    """The per-layer, per-step path must not look an op up: each call site holds its op and
    argument binding in a function-local static (built on its first call), and the
    dispatcher is searched in one place, NpuCall's constructor."""
    text = (REPO_ROOT / "vllm_ascend_compat" / "csrc" / "npu_kernels.cpp").read_text()
    sites = re.findall(r"(\S+\s+\S+\s+)NpuCall call_npu\(", text)
    assert sites and all(site.split() == ["static", "const"] for site in sites), sites
    assert len(sites) == len(CPP_CALL.findall(text))
    assert text.count("findSchemaOrThrow") == 1, "the dispatcher is searched outside NpuCall"
