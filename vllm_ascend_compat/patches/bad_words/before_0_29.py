"""The 0.29.0 check that every ``bad_words`` entry tokenizes to a token, before 0.29."""

from typing import Any


def _invalid(message: str, bad_words: list[str]) -> Exception:
    """The release's validation error: VLLMValidationError from 0.14, plain ValueError before."""
    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:
        return ValueError(message)
    return VLLMValidationError(message, parameter="bad_words", value=bad_words)


def reject_bad_words_without_tokens(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Check the unprefixed form, as upstream does before it indexes the first token.

    Upstream also skips a space-prefixed form without tokens; that rarer case (the word
    has tokens, the word after a space has none) is left to the original code.
    """
    tokenizer = args[0] if args else kwargs["tokenizer"]
    for bad_word in instance.bad_words or ():
        if not tokenizer.encode(text=bad_word.lstrip(), add_special_tokens=False):
            message = "bad_words entries must tokenize to at least one token."
            raise _invalid(message, instance.bad_words)
    return wrapped(*args, **kwargs)
