"""``vllm-ascend-compat``: ``doctor`` checks this environment, ``patches`` explains patches."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from vllm_ascend_compat import activation, patching, release
from vllm_ascend_compat.patches import ALL


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plan(detected: release.DetectedRelease) -> list[dict[str, Any]]:
    """Each patch's status for this release, with its target checked against vLLM."""
    disabled = patching.disabled_ids(p.id for p in ALL)
    rows = []
    for patch in ALL:
        row = {
            "id": patch.id,
            "phase": patch.phase.value,
            "kind": patch.kind.value,
            "target": patch.target,
            "versions": patch.versions,
            "optional": patch.optional,
        }
        if not patch.applies_to(detected.release):
            row.update(status="out-of-range", check="not needed")
        else:
            row["status"] = "disabled" if patch.id in disabled else "will-apply"
            try:
                importlib.import_module(patch.module)
                row["check"] = patching.check_target(patch) or "ok"
            except Exception as err:
                row["check"] = f"target module does not import: {err!r}"
        rows.append(row)
    return rows


def _device_found() -> dict[str, Any]:
    from vllm_ascend_compat import device, ops

    dev = device.current()
    return {"type": dev.type, "name": dev.name(), "count": dev.device_count(),
            "kernels": ops.register()}  # fmt: skip


def doctor(as_json: bool) -> int:
    # vLLM logs to stdout on some releases (0.11.0 when it lists its plugins): with --json,
    # stdout must carry the JSON document alone
    with _stdout_to_stderr() if as_json else contextlib.nullcontext():
        report, status = _doctor_report()
    _print_doctor(report, as_json)
    return status


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr meanwhile: a logging handler holds the sys.stdout
    it found, so only the descriptor reaches every writer."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _doctor_report() -> tuple[dict[str, Any], int]:
    """The environment's report, and the exit status: 1 if a required patch cannot apply."""
    import torch

    decision = activation.decide()
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_npu": _dist_version("torch_npu") or _dist_version("torch-npu"),
        "activation": asdict(decision),
        "device": _device_found() if decision.active else None,
    }
    try:
        detected = release.detect()
    except release.ReleaseError as err:
        report["vllm"] = {"error": str(err)}
        return report, 1
    report["vllm"] = {
        "installed": detected.installed,
        "flavour": detected.flavour,
        "source": detected.source,
        "release": str(detected.release),
        "supported": detected.supported,
        "window": release.window().describe(),
        "warnings": list(detected.warnings),
    }
    try:
        report["patches"] = _plan(detected)
    except patching.PatchError as err:
        report["patches_error"] = str(err)
        return report, 1
    broken = [
        row
        for row in report["patches"]
        if row["status"] == "will-apply" and row["check"] != "ok" and not row["optional"]
    ]
    return report, 1 if broken else 0


def _print_doctor(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    vllm = report["vllm"]
    if "error" in vllm:
        print(f"vLLM        ERROR: {vllm['error']}")
    else:
        flavour = f", build {vllm['flavour']}" if vllm["flavour"] else ""
        window = (
            f"in the window {vllm['window']}"
            if vllm["supported"]
            else (f"outside the window {vllm['window']} (allowed)")
        )
        print(f"vLLM        {vllm['installed']}{flavour} (from {vllm['source']}); {window}")
        for warning in vllm["warnings"]:
            print(f"  WARNING   {warning}")
    print(f"torch       {report['torch']}")
    print(f"torch_npu   {report['torch_npu'] or 'not installed'}")
    found = report["device"]
    print(f"device      {found['count']} x {found['name']} ({found['type']}), "
          f"{found['kernels']} kernels" if found else "device      none in use")  # fmt: skip
    decision = report["activation"]
    state = f"active on {decision['device']}" if decision["active"] else "inactive"
    print(f"activation  {state}: {decision['reason']}")
    if "patches_error" in report:
        print(f"patches     ERROR: {report['patches_error']}")
    if "patches" in report:
        print(f"patch plan for vLLM {vllm['release']}:")
        for row in report["patches"]:
            print(f"  {row['id']:<34} {row['status']:<13} {row['phase']:<14} {row['check']}")


def explain(patch_id: str | None, as_json: bool) -> int:
    chosen = [p for p in ALL if patch_id in (None, p.id)]
    if not chosen:
        print(
            f"unknown patch id {patch_id!r}; known: {', '.join(p.id for p in ALL)}", file=sys.stderr
        )
        return 2
    rows = [{**asdict(p), "phase": p.phase.value, "kind": p.kind.value} for p in chosen]
    if as_json:
        print(json.dumps(rows if patch_id is None else rows[0], indent=2))
    elif patch_id is None:
        for p in chosen:
            print(f"{p.id:<34} vLLM {p.versions:<10} {p.phase.value:<14} {p.kind.value}")
    else:
        p = chosen[0]
        print(
            f"{p.id}\n  target:      {p.target}\n  vLLM:        {p.versions}\n"
            f"  phase/kind:  {p.phase.value} / {p.kind.value}"
            f"{' (optional)' if p.optional else ''}\n"
            f"  why:         {p.reason}\n  upstream:    {p.upstream}\n"
            f"  remove when: {p.remove_when}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-ascend-compat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("doctor", help="check vLLM, torch, the device and the patch plan")
    doc.add_argument("--json", action="store_true")
    pat = sub.add_parser("patches", help="list the patches, or explain one")
    pat.add_argument("id", nargs="?")
    pat.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor(args.json)
    return explain(args.id, args.json)


if __name__ == "__main__":
    sys.exit(main())
