"""Install the switch for the EMULATED npu device into a venv.

    python emulator/install.py [VENV]          # default: this interpreter's environment
    python emulator/install.py --uninstall [VENV]

Writes ``vllm_ascend_compat_emulator.pth`` into the venv's site-packages: one line, run at
every interpreter start, that puts ``emulator/`` (this checkout's real path) first on
``sys.path`` only when ``VLLM_ASCEND_COMPAT_EMULATED_NPU=1``. So in that venv ``import
torch_npu`` loads the emulator (host memory, for tests; not an Ascend NPU) exactly when the
variable is set, in every process of the run. The line imports nothing from the checkout,
so a venv whose checkout was deleted starts silently (torch_npu is then just absent).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "vllm_ascend_compat_emulator.pth"
EMULATOR_DIR = str(Path(__file__).resolve().parent)
SWITCH = "VLLM_ASCEND_COMPAT_EMULATED_NPU"


def site_packages(venv: Path | None) -> Path:
    """The purelib directory of ``venv``'s interpreter (of this one when ``None``)."""
    if venv is None:
        return Path(sysconfig.get_paths()["purelib"])
    python = venv / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    purelib = Path(out.stdout.strip())
    if not purelib.resolve().is_relative_to(venv.resolve()):
        raise SystemExit(f"{venv}'s site-packages is {purelib}, outside it: is {venv} a venv?")
    return purelib


def pth_text() -> str:
    """One line starting with ``import``: site executes such a line (a bare path, it would
    add to ``sys.path`` whatever the variable says)."""
    return (
        f"import os, sys; os.environ.get({SWITCH!r}, '').strip() == '1' "
        f"and {EMULATOR_DIR!r} not in sys.path and sys.path.insert(0, {EMULATOR_DIR!r})\n"
    )


def install(target: Path) -> Path:
    """Write the ``.pth`` file into the site-packages directory ``target``; return its path."""
    target.mkdir(parents=True, exist_ok=True)
    path = target / PTH_NAME
    path.write_text(pth_text())
    return path


def uninstall(target: Path) -> bool:
    """Remove the ``.pth`` file from ``target``; whether there was one."""
    path = target / PTH_NAME
    if path.exists():
        path.unlink()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", nargs="?", type=Path, help="the venv (default: this one)")
    parser.add_argument("--uninstall", action="store_true", help="remove the .pth file")
    args = parser.parse_args(argv)
    target = site_packages(args.venv)
    if args.uninstall:
        removed = uninstall(target)
        print(f"removed {target / PTH_NAME}" if removed else f"nothing at {target / PTH_NAME}")
    else:
        print(f"wrote {install(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
