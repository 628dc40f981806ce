"""Patch implementations for the stand-in targets; CALLS counts how often each was built."""

CALLS: list[str] = []


def shout(original):
    CALLS.append("shout")

    def replacement(*args):
        result = original(*args)
        return result.upper() if isinstance(result, str) else ("shout", result)

    return replacement


def tag(wrapped, instance, args, kwargs):
    return ("wrapped", wrapped(*args, **kwargs))


def added(x):
    return ("added", x)


def boom(original):
    raise RuntimeError("boom")
