"""The out-of-vocabulary test shared by every release's hook (no vLLM imports)."""

from typing import Any


def oov_stop_token_ids(params: Any, vocab_size: int) -> list[int]:
    """The stop_token_ids that cannot index logits of width ``vocab_size``."""
    return [t for t in params.stop_token_ids or () if t < 0 or t >= vocab_size]
