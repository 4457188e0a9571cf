"""Capture times written as text, as crop lists and indexing manifests give them.

One parser for both sides: ``training.data.readers`` (the ``timestamp`` column of a crops
CSV) and ``service.jobs.naming`` (manifests inside an indexing archive). Each caller turns
the ``ValueError`` into its own domain error naming the file and row at fault.
"""

from __future__ import annotations

import datetime as dt


def epoch_seconds(text: str) -> float:
    """Seconds since the epoch from ``text``: a number (taken as epoch seconds) or an ISO 8601
    time; a trailing ``Z`` means UTC and a time without an offset is taken as UTC.

    Surrounding white space is ignored. Raises ``ValueError`` quoting ``text`` otherwise.
    """
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {value!r} is not epoch seconds or ISO 8601") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()
