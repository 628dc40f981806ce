"""The guard in front of the app factory of the releases before 0.29 (``openai.api_server``)."""

from vllm_ascend_compat.patches.request_guard.guard import add_request_guard

__all__ = ["add_request_guard"]
