"""Run many vLLM releases on Huawei Ascend NPUs, or in a CPU mode, from one plugin.

Importing this package is cheap: vLLM and torch are imported only when used.
"""

__version__ = "0.1.0"
