"""Holds ``greet`` by name, as vLLM modules hold ``check_stop``."""

from targets.sample_target import greet

__all__ = ["greet"]
