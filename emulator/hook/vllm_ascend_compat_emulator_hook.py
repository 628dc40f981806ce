"""Run at interpreter start by ``vllm_ascend_compat_emulator.pth`` (``emulator/install.py``).

When ``VLLM_ASCEND_COMPAT_EMULATED_NPU=1`` is set, puts the emulator's directory first on
``sys.path``, so ``import torch_npu`` finds the EMULATED npu device (host memory, for
tests; not an Ascend NPU). Without the variable it does nothing and ``torch_npu`` is not
importable from here. Subprocesses of the venv inherit the variable, so the switch covers
a whole run.
"""

import os
import sys

VARIABLE = "VLLM_ASCEND_COMPAT_EMULATED_NPU"
EMULATOR_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def enabled() -> bool:
    return os.environ.get(VARIABLE, "").strip() == "1"


if enabled() and EMULATOR_DIR not in sys.path:
    sys.path.insert(0, EMULATOR_DIR)
