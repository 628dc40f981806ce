"""Regenerate ``schemas.toml`` (next to this file) from the torch_npu wheel, for the EMULATOR.

The emulated npu device (host memory, for tests; not an NPU, and it cannot know the real
device's numerics or timing) defines the torch_npu / ATB
operators the plugin calls with the schema strings the real torch_npu registers. Those
strings are read here from the wheel, without importing torch_npu (that needs CANN):

* ``npu::`` ops: ``torch_npu/lib/libtorch_npu.so`` embeds every schema as a plain string
  (torch_npu's generated ``TORCH_LIBRARY(npu, m)`` block). The overload the plugin calls
  is the default one (no ``.out``), which is what is picked, never the last regex match.
* ``atb::`` ops: ``torch_npu/op_plugin/atb/_atb_ops.py`` holds no schema strings (it only
  lists op names and forwards to ``torch.ops.atb``). The schemas are the ``m.def(...)``
  strings of ``libop_plugin_atb.so`` (op-plugin ``op_plugin/ops/atb/*.cpp``,
  ``TORCH_LIBRARY_FRAGMENT(atb, m)``). The short ones are not stored as plain strings:
  the compiler builds them inline, 16 bytes at a time from ``.rodata.cst16`` and with
  immediates. This script rebuilds them from ``objdump -d`` (binutils) of that library and
  cross-checks every argument's name and type against the C++ declaration in
  ``AtbOpsInterface.h``. Without objdump it falls back to a schema derived from that
  declaration (names and types only; no defaults) and says so in ``source``.

Usage::

    python extract_schemas.py WHEEL            # rewrite schemas.toml
    python extract_schemas.py WHEEL --check    # exit 1 if schemas.toml differs
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMAS_TOML = HERE / "schemas.toml"

#: The ops the plugin calls (tests/torch_npu_calls.toml), with their namespace.
OPS: dict[str, str] = {
    "npu_rms_norm": "npu",
    "npu_add_rms_norm": "npu",
    "npu_swiglu": "npu",
    "npu_weight_quant_batchmatmul": "npu",
    "npu_quantize": "npu",
    "npu_dynamic_quant": "npu",
    "npu_quant_matmul": "npu",
    "npu_format_cast": "npu",
    "npu_fused_infer_attention_score": "npu",
    "npu_grouped_matmul": "npu",
    "_npu_rotary_embedding": "atb",
    "_npu_reshape_and_cache": "atb",
    "_npu_paged_attention": "atb",
    "_npu_reshape_and_cache_siso": "atb",
    "_npu_paged_attention_mla": "atb",
}

NPU_LIB = "torch_npu/lib/libtorch_npu.so"
ATB_LIB = "torch_npu/lib/libop_plugin_atb.so"
ATB_HEADER = "torch_npu/include/third_party/op-plugin/op_plugin/include/AtbOpsInterface.h"

# A schema string: name, optional overload, (arguments, alias sets allowed), -> returns.
_SCHEMA = re.compile(rb"(?<![\w.])(_?npu_\w+)(\.\w+)?\(((?:[^()]|\(\w!?\))*)\) -> [^\x00\n]+")
_DECLARATION = re.compile(r"TORCH_NPU_API\s+[\w:<>&, ]+?\s+&?(\w+)\(([^;]*)\);")


def plain_schemas(data: bytes) -> dict[str, list[str]]:
    """Every schema stored as a plain string, by op name: all overloads, first seen first."""
    found: dict[str, list[str]] = {}
    for match in _SCHEMA.finditer(data):
        text = match.group(0).decode()
        found.setdefault(match.group(1).decode(), [])
        if text not in found[match.group(1).decode()]:
            found[match.group(1).decode()].append(text)
    return found


def default_overload(name: str, candidates: list[str]) -> str:
    """The overload ``call_npu("ns::name")`` resolves: the one with no overload name."""
    plain = [s for s in candidates if s.startswith(name + "(")]
    if len(plain) != 1:
        raise SystemExit(f"{name}: expected one default overload, found {plain or candidates}")
    return plain[0]


# --- ATB: schemas the compiler built inline ---

_NEW = re.compile(r"mov\s+edi,0x([0-9a-f]+)$")
_LOAD16 = re.compile(r"movdq[au]\s+(xmm\d+),XMMWORD PTR \[rip\+0x[0-9a-f]+\]\s+# ([0-9a-f]+)")
_IMM64 = re.compile(r"movabs\s+(\w+),0x([0-9a-f]+)")
_LOAD8 = re.compile(r"mov\s+(\w+),QWORD PTR \[rip\+0x[0-9a-f]+\]\s+# ([0-9a-f]+)")
_STORE = re.compile(
    r"mov(?:ups|dqu|aps)?\s+(XMMWORD|QWORD|DWORD|WORD|BYTE) PTR \[rax(?:\+0x([0-9a-f]+))?\],(\w+)$"
)
_CALL = re.compile(r"\tcall\s")
_SIZE = {"XMMWORD": 16, "QWORD": 8, "DWORD": 4, "WORD": 2, "BYTE": 1}


def _sections(library: Path) -> list[tuple[int, int, int]]:
    """(address, size, file offset) of the library's read-only data sections."""
    out = subprocess.run(["objdump", "-h", str(library)], capture_output=True, text=True).stdout
    sections = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1].startswith(".rodata"):
            sections.append((int(parts[3], 16), int(parts[2], 16), int(parts[5], 16)))
    return sections


def inline_schemas(library: Path) -> dict[str, str]:
    """Schema strings built inline: after ``operator new(len + 1)``, the code stores the text
    into the new buffer from 16-byte constants and immediates. Replays those stores."""
    data = library.read_bytes()
    sections = _sections(library)

    def read(address: int, size: int) -> bytes:
        for start, length, offset in sections:
            if start <= address < start + length:
                return data[offset + address - start : offset + address - start + size]
        return b"\0" * size

    asm = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(asm):
        new = _NEW.search(line)
        if not new or not 20 < int(new.group(1), 16) < 1000:
            continue
        call = next((k for k in range(i + 1, min(i + 20, len(asm))) if _CALL.search(asm[k])), None)
        if call is None:
            continue
        text = bytearray(b"\0" * (int(new.group(1), 16) - 1))
        registers: dict[str, bytes] = {}
        for k in range(call + 1, min(call + 200, len(asm))):
            step = asm[k]
            if _CALL.search(step):
                break
            for pattern, width in ((_LOAD16, 16), (_LOAD8, 8)):
                if m := pattern.search(step):
                    registers[m.group(1)] = read(int(m.group(2), 16), width)
            if m := _IMM64.search(step):
                registers[m.group(1)] = int(m.group(2), 16).to_bytes(8, "little")
            elif m := _STORE.search(step):
                size, offset, source = _SIZE[m.group(1)], int(m.group(2) or "0", 16), m.group(3)
                if source.startswith("0x"):
                    value = int(source, 16).to_bytes(size, "little")
                elif source in registers:
                    value = registers[source][:size]
                elif "r" + source[1:] in registers:  # eax of rax
                    value = registers["r" + source[1:]][:size]
                else:
                    continue
                text[offset : offset + size] = value[: max(0, len(text) - offset)]
        if b"\0" not in text and (m := _SCHEMA.fullmatch(bytes(text))):
            found.setdefault(m.group(1).decode() + (m.group(2) or b"").decode(), text.decode())
    return found


# --- ATB: the header declaration, and a schema derived from it ---


def split_arguments(arguments: str) -> list[str]:
    """A schema's or a C++ declaration's arguments, split at the top-level commas."""
    parts, depth, current = [], 0, ""
    for char in arguments:
        depth += (char in "<([" and 1) or ((char in ">)]" and -1) or 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def header_declarations(text: str) -> dict[str, list[tuple[str, str]]]:
    """(schema type, name) of every parameter of every ``TORCH_NPU_API`` declaration."""
    types = [
        (r"^(const\s+)?c10::optional<at::Tensor>\s*&$", "Tensor?"),
        (r"^const\s+at::Tensor\s*&$", "Tensor"),
        (r"^at::Tensor\s*&$", "Tensor!"),
        (r"^(const\s+)?int64_t$", "int"),
        (r"^(const\s+)?double$", "float"),
        (r"^(const\s+)?bool$", "bool"),
        (r"^c10::SymIntArrayRef$", "SymInt[]"),
    ]
    found: dict[str, list[tuple[str, str]]] = {}
    for name, params in _DECLARATION.findall(text):
        parameters = []
        for param in split_arguments(params):
            m = re.fullmatch(r"(.*?)\s*(\w+)", param.split("=")[0].strip())
            assert m, param
            cpp, arg = m.group(1).replace(" ", "").replace("const", "const "), m.group(2)
            kind = next((t for p, t in types if re.match(p, cpp)), "?" + cpp)
            parameters.append((kind, arg))
        found.setdefault(name, parameters)
    return found


def derived_schema(name: str, parameters: list[tuple[str, str]]) -> str:
    """A schema from the C++ declaration: mutated tensors get alias sets a, b, ...; a void
    function returns (). The declaration carries no defaults and no keyword-only marker."""
    parts, alias = [], iter("abcdefgh")
    for kind, arg in parameters:
        parts.append(f"Tensor({next(alias)}!) {arg}" if kind == "Tensor!" else f"{kind} {arg}")
    return f"{name}({', '.join(parts)}) -> ()"


def schema_arguments(schema: str) -> list[tuple[str, str]]:
    """(type without alias annotation, name) of each argument of a schema string."""
    inner = schema[schema.index("(") + 1 : schema.rindex(") ->")]
    out = []
    for part in split_arguments(inner):
        if part == "*" or not part:
            continue
        part = part.lstrip("*, ").split("=")[0].strip()
        kind, arg = part.rsplit(" ", 1)
        out.append((re.sub(r"\(\w!?\)", "", kind).strip(), arg))
    return out


def _as_header_kinds(arguments: list[tuple[str, str]], schema: str) -> list[tuple[str, str]]:
    """Schema argument types in the header's vocabulary (``Tensor(a!)`` -> ``Tensor!``)."""
    mutated = set(re.findall(r"Tensor\(\w!\) (\w+)", schema))
    return [("Tensor!" if arg in mutated else kind, arg) for kind, arg in arguments]


def extract(wheel: Path) -> dict[str, dict[str, str]]:
    entries: dict[str, dict[str, str]] = {}
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as tmp:
        npu = plain_schemas(archive.read(NPU_LIB))
        atb_plain = plain_schemas(archive.read(ATB_LIB))
        header = header_declarations(archive.read(ATB_HEADER).decode())
        atb_inline: dict[str, str] = {}
        if shutil.which("objdump"):
            library = Path(tmp) / "libop_plugin_atb.so"
            library.write_bytes(archive.read(ATB_LIB))
            atb_inline = inline_schemas(library)
        for op, namespace in OPS.items():
            if namespace == "npu":
                schema = default_overload(op, npu.get(op, []))
                source = f"{NPU_LIB}: embedded string (default overload)"
            elif op in atb_plain:
                schema = default_overload(op, atb_plain[op])
                source = f"{ATB_LIB}: embedded string"
            elif op in atb_inline:
                schema = atb_inline[op]
                source = f"{ATB_LIB}: m.def string built inline, rebuilt from objdump -d"
            else:
                schema = derived_schema(op, header[op])
                source = f"{ATB_HEADER}: derived from the C++ declaration (no defaults)"
            if namespace == "atb":  # every argument, in order, as the header declares it
                got = _as_header_kinds(schema_arguments(schema), schema)
                if got != header[op]:
                    raise SystemExit(f"{op}: schema {got} does not match header {header[op]}")
            entries[op] = {"namespace": namespace, "schema": schema, "source": source}
    return entries


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(entries: dict[str, dict[str, str]], wheel_name: str) -> str:
    lines = [
        "# The torch_npu / ATB operator schemas the plugin calls, read from the torch_npu wheel",
        f"# ({wheel_name}) by extract_schemas.py. Do not edit: regenerate with",
        "#     python emulator/torch_npu/extract_schemas.py WHEEL",
        "# The emulator (ops.py) defines each op with this string; tests check it against the",
        "# wheel. `source` says where in the wheel the string came from.",
        "",
    ]
    for op, entry in entries.items():
        lines += [f"[op.{op}]"] + [f"{k} = {_quote(v)}" for k, v in entry.items()] + [""]
    return "\n".join(lines)


def load() -> dict[str, dict[str, str]]:
    """The committed schemas: op name -> {namespace, schema, source}."""
    return tomllib.loads(SCHEMAS_TOML.read_text())["op"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    entries = extract(args.wheel)
    if args.check:
        committed = load()
        stale = {op for op in entries if committed.get(op) != entries[op]}
        stale |= set(committed) - set(entries)
        for op in sorted(stale):
            print(f"{op}: committed {committed.get(op)!r}\n  wheel {entries.get(op)!r}")
        return 1 if stale else 0
    SCHEMAS_TOML.write_text(render(entries, args.wheel.name))
    print(f"wrote {SCHEMAS_TOML} ({len(entries)} ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
