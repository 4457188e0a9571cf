"""Capture times: parsed from text, checked, and turned into datetimes and back.

One parser and one range check for every side: ``training.data.readers`` (the ``timestamp``
column of a crops CSV), ``service.jobs.naming`` (manifests inside an indexing archive) and the
service's API (item timestamps). A time is accepted only when it is finite and a round trip
``datetime -> epoch seconds -> datetime`` can represent it (UTC years 1 to 9999), so nothing
stored can later fail to convert. Each caller turns the ``ValueError`` into its own domain
error naming the file, row or field at fault.
"""

from __future__ import annotations

import datetime as dt
import math

UTC = dt.timezone.utc
MIN_EPOCH = dt.datetime(1, 1, 1, tzinfo=UTC).timestamp()
"""Earliest accepted time: 0001-01-01T00:00:00Z, in epoch seconds."""
MAX_EPOCH = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""Latest accepted time: 9999-12-31T23:59:59Z (a whole second: float rounding of anything
later could round up into year 10000)."""


def check_epoch(seconds: float) -> float:
    """``seconds`` as a float when finite and within [MIN_EPOCH, MAX_EPOCH]; else ValueError."""
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError(f"timestamp {seconds!r} is not a finite number")
    if not MIN_EPOCH <= value <= MAX_EPOCH:
        raise ValueError(
            f"timestamp {seconds!r} is outside 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z"
        )
    return value


def to_epoch(t: dt.datetime) -> float:
    """Epoch seconds of ``t`` (naive means UTC), range-checked as :func:`check_epoch`."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return check_epoch(t.timestamp())


def to_datetime(seconds: float) -> dt.datetime:
    """Aware UTC datetime of stored epoch seconds, for reading back.

    Values written before the range check existed are clamped to the nearest representable
    time instead of failing (NaN reads as the earliest), so such an item stays readable.
    """
    value = float(seconds)
    if math.isnan(value):
        value = MIN_EPOCH
    return dt.datetime.fromtimestamp(min(max(value, MIN_EPOCH), MAX_EPOCH), tz=UTC)


def epoch_seconds(text: str) -> float:
    """Seconds since the epoch from ``text``: a number (taken as epoch seconds) or an ISO 8601
    time; a trailing ``Z`` means UTC and a time without an offset is taken as UTC.

    Surrounding white space is ignored. Raises ``ValueError`` quoting ``text`` when it is
    neither, or names a time :func:`check_epoch` refuses.
    """
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return check_epoch(number)
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {value!r} is not epoch seconds or ISO 8601") from None
    return to_epoch(t)
