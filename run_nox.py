"""nox, from a venv of its own made on first use: ``python3 run_nox.py -s demo``.

A fresh machine needs Python 3.11 with pip and venv, nothing else: the venv lives in the
project's cache (``VLLM_ASCEND_COMPAT_CACHE``, default ``~/.cache/vllm-ascend-compat``)
beside the environments noxfile.py makes, and every argument goes to nox unchanged.
Not named nox.py, which would shadow the nox package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from vllm_ascend_compat.envs import cache_dir  # noqa: E402

NOX = "nox==2026.10.20"


def nox_venv() -> Path:
    """The venv holding :data:`NOX`, made again when it is missing, holds another nox, or
    its python no longer resolves (the interpreter it was made from has gone)."""
    venv = cache_dir() / "run_nox"
    ready = venv / "ready"
    if not (ready.exists() and ready.read_text() == NOX and (venv / "bin" / "python").exists()):
        print(f"run_nox.py: installing {NOX} into {venv}", file=sys.stderr)
        # the real interpreter, not a symlink to it that may be temporary
        base = os.path.realpath(sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", NOX],
            check=True,
        )  # fmt: skip
        ready.write_text(NOX)
    return venv


def main() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"run_nox.py needs Python 3.11, which the sessions run on; this is "
                 f"{sys.version.split()[0]}")  # fmt: skip
    bin_dir = nox_venv() / "bin"
    # first on PATH, as in an activated venv: the sessions find python3.11 there
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    python = str(bin_dir / "python")
    os.execve(python, [python, "-m", "nox", "-f", str(ROOT / "noxfile.py"), *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
