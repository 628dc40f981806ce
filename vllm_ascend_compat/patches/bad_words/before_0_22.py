"""The 0.22.0 empty-string check on ``bad_words``, for releases before 0.22."""

from typing import Any


def reject_empty_bad_words(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if any(not bad_word for bad_word in instance.bad_words or ()):
        raise ValueError(
            f"bad_words cannot contain an empty string. Got bad_words={instance.bad_words}"
        )
    return wrapped(*args, **kwargs)
