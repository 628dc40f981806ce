"""Backport of vLLM PR 54196 (0.29.0) into ``SamplingParams.verify`` (0.18 up to 0.28)."""

from typing import Any

from vllm.exceptions import VLLMValidationError

from vllm_ascend_compat.patches.request_validation.vocab import oov_stop_token_ids


def reject_oov_stop_token_ids(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    model_config = args[0] if args else kwargs["model_config"]
    vocab_size = model_config.get_vocab_size()
    if invalid := oov_stop_token_ids(instance, vocab_size):
        raise VLLMValidationError(
            f"token_id(s) {invalid} in stop_token_ids contain out-of-vocab token ids. "
            f"Vocabulary size: {vocab_size}",
            parameter="stop_token_ids",
            value=invalid,
        )
    return wrapped(*args, **kwargs)
