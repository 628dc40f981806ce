"""The check on the V1 (Input)Processor before 0.17, where validation raises ValueError."""

from typing import Any

from vllm_ascend_compat.patches.request_validation.vocab import oov_stop_token_ids


def reject_oov_stop_token_ids(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    params = args[0] if args else kwargs["params"]
    vocab_size = instance.model_config.get_vocab_size()
    if invalid := oov_stop_token_ids(params, vocab_size):
        raise ValueError(
            f"token_id(s) {invalid} in stop_token_ids contain out-of-vocab token ids. "
            f"Vocabulary size: {vocab_size}"
        )
    return wrapped(*args, **kwargs)
