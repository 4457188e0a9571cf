"""The one exception the dataset readers, the validation split and the attribute loader raise."""

from __future__ import annotations

from collections.abc import Sequence


class DatasetError(ValueError):
    """A dataset on disk is not what the reader expects; the message names the file or folder."""


def first_few(items: Sequence[object], limit: int = 5) -> str:
    """``'a', 'b', 'c' (and 7 more)``: the first ``limit`` items of a list, for error messages."""
    shown = ", ".join(repr(str(x)) for x in items[:limit])
    rest = len(items) - limit
    return f"{shown} (and {rest} more)" if rest > 0 else shown
