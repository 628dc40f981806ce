"""Generate docs/support-matrix.md from the release data, the patch registry and the
recorded runs (docs/contract-record.json, docs/sweep-record.json).

Run ``python3 run_nox.py -s docs`` (or ``python docs/support_matrix.py``) after changing
any of them; tests/test_docs.py fails while the committed copy is stale.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from packaging.version import Version

from vllm_ascend_compat.patches import ALL
from vllm_ascend_compat.release import window

DOCS = Path(__file__).parent
OUTPUT = DOCS / "support-matrix.md"
FEATURES = DOCS.parent / "tests" / "features.toml"
CONTRACT = DOCS / "contract-record.json"
SWEEP = DOCS / "sweep-record.json"


def _record(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _runs(versions: list[str], chosen: set[str]) -> str:
    """The chosen releases as runs of consecutive releases: "0.9.0 to 0.10.0, 0.12.0"."""
    runs: list[list[str]] = []
    for index, version in enumerate(versions):
        if version not in chosen:
            continue
        if runs and versions.index(runs[-1][-1]) == index - 1:
            runs[-1].append(version)
        else:
            runs.append([version])
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]} to {run[-1]}" for run in runs) or "-"


def _releases() -> list[str]:
    supported = window()
    contract, sweep = _record(CONTRACT), _record(SWEEP)
    out = [
        "## Releases",
        "",
        f"Every final release from {supported.describe()}. *Anchor*: the whole suite runs "
        f"on it in CI: on {supported.anchors[-1]} in every run, on each other anchor in "
        f"turn, one a run (`python3 run_nox.py -s anchor -- X` runs it on any). *Swept*: the "
        "end-to-end smoke "
        "(`python3 run_nox.py -s sweep`: offline generation token-exact against HF with "
        "chunked prefill and prefix caching, `vllm serve` completions and the hostile-input "
        "corpus, ngram speculative decoding, and every backport's reproducer); CI sweeps a "
        "rotating share of these releases, and the column shows the last recorded sweep. "
        "*Contract*: the static contract on the release's source "
        "(`python3 run_nox.py -s contract`, every CI run).",
        "",
        "| vLLM | role | torch | pins | contract | sweep |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for version in supported.releases:
        env = supported.environment(version)
        if version == supported.default:
            role = "anchor (default)"
        elif version in supported.anchors:
            role = "anchor"
        elif version in supported.wheel_only:
            role = "swept (built from the CUDA wheel: no sdist)"
        else:
            role = "swept"
        checked = contract.get(version)
        verdict = (
            f"ok ({len(checked['patches applied'])} patches apply)" if checked else "not recorded"
        )
        if version in supported.anchors:
            swept = "whole suite in CI"
        elif version in sweep:
            run = sweep[version]
            swept = f"{run['result']} at `{run['commit']}` ({run['tests']}; {run['seconds']} s)"
        else:
            swept = "not swept yet"
        pins = Path(env.constraints).name
        out.append(f"| {version} | {role} | {env.torch} | `{pins}` | {verdict} | {swept} |")
    return out


# The devices a feature's tests run on (tests/features.toml ``devices``; CPU mode if unset).
DEVICES = {"cpu": "CPU mode", "emulated-npu": "emulated NPU"}


def _features(anchors: list[str]) -> list[str]:
    """Anchors x features: tested, or unsupported with the vLLM reason (tests/features.toml)."""
    features = tomllib.loads(FEATURES.read_text())["feature"]
    out = [
        "## Features by anchor",
        "",
        "`tested`: the feature's end-to-end tests run and pass on that anchor in CI, on the "
        "devices of its row: *CPU mode* (`VLLM_ASCEND_COMPAT_CPU=1`), or the *emulated NPU* "
        "(`VLLM_ASCEND_COMPAT_EMULATED_NPU=1`: NPU mode on the host-memory `npu` device of "
        "`emulator/`, whose torch_npu ops enforce the real ops' preconditions; see "
        "emulator/README.md). No row ran on an Ascend NPU. `no (n)`: that vLLM release "
        "cannot run it, reason n below; its tests skip there with that reason.",
        "",
        "| feature | tests | devices | " + " | ".join(anchors) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in anchors) + " |",
    ]
    reasons: list[str] = []
    for feature in features:
        cells = []
        for version in anchors:
            reason = feature.get("unsupported", {}).get(version)
            if reason:
                reasons.append(f"{version}, {feature['id']}: {reason}")
                cells.append(f"no ({len(reasons)})")
            else:
                cells.append("tested")
        tests = "<br>".join(f"`{t}`" for t in feature["tests"])
        devices = ", ".join(DEVICES[d] for d in feature.get("devices", ["cpu"]))
        out.append(f"| {feature['title']} | {tests} | {devices} | " + " | ".join(cells) + " |")
    if reasons:
        out += ["", *(f"{n}. {r}" for n, r in enumerate(reasons, 1))]
    return out


def _patches(releases: list[str]) -> list[str]:
    out = [
        "## Patches",
        "",
        "Each patch applies to exactly the releases its range holds; the static contract "
        "checks on every release's source that the range is true (see "
        "docs/writing-a-patch.md).",
        "",
        "| patch | phase | kind | vLLM | upstream | applies to |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in ALL:
        link = p.upstream if p.upstream in ("NPU only", "hardening") else f"[link]({p.upstream})"
        served = {v for v in releases if p.applies_to(Version(v))}
        out.append(
            f"| `{p.id}` | {p.phase.value} | {p.kind.value} | `{p.versions}` | {link} | "
            f"{_runs(releases, served)} |"
        )
    return out


def render() -> str:
    supported = window()
    out = [
        "# Support matrix",
        "",
        "Generated by `docs/support_matrix.py` from `vllm_ascend_compat/releases.toml`, the "
        "patch registry and the recorded runs (`docs/contract-record.json`, "
        "`docs/sweep-record.json`). Do not edit by hand: run `python3 run_nox.py -s docs`.",
        "",
        "What ran where: every test here ran on x86 machines without an NPU, in CPU mode "
        "(`VLLM_ASCEND_COMPAT_CPU=1`) and, for the features whose row says so, in NPU mode on "
        "the emulated npu device (`emulator/`: host memory, torch_npu's ops as reference "
        "math that enforces their documented preconditions and the wheel's schemas). "
        "Nothing has run on real Ascend hardware: the emulator cannot know the real "
        "kernels' numerics, timing or memory limits.",
        "",
        *_releases(),
        "",
        *_features(list(supported.anchors)),
        "",
        *_patches(list(supported.releases)),
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
