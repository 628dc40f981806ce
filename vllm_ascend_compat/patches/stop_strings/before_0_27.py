"""Earliest-completing stop string (vLLM PR 49391, 0.27.0) for releases before 0.27."""

import sys
from collections.abc import Callable
from typing import Any


def check_stop_strings(
    output_text: str, new_char_count: int, stop: list[str], include_in_output: bool
) -> tuple[str, int] | None:
    """0.27.0's check: (stop string, truncation offset or -1), or None.

    Of the stop strings found in the new text, the one that ends first wins, as if
    tokens had been appended one at a time; ties go to stop-list order.
    """
    if not new_char_count or not stop:
        return None
    best_stop_str: str | None = None
    best_stop_index = 0
    best_end = sys.maxsize
    for stop_str in stop:
        stop_index = output_text.find(stop_str, 1 - new_char_count - len(stop_str))
        if stop_index == -1:
            continue
        end = stop_index + len(stop_str)
        if end < best_end:
            best_stop_str, best_stop_index, best_end = stop_str, stop_index, end
    if best_stop_str is None:
        return None
    if include_in_output:
        return best_stop_str, (-1 if best_end >= len(output_text) else best_end)
    return best_stop_str, best_stop_index


def earliest_stop_string(original: Callable[..., Any]) -> Callable[..., Any]:
    return check_stop_strings
