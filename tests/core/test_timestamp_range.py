"""The one range check of capture times: finite and representable by a datetime round trip."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from reidcore.timestamps import (
    MAX_EPOCH,
    MIN_EPOCH,
    check_epoch,
    epoch_seconds,
    to_datetime,
    to_epoch,
)

UTC = dt.timezone.utc


def test_range_ends_are_hand_computed() -> None:
    # 719162 days from 0001-01-01 to 1970-01-01; 2932896 from 1970-01-01 to 9999-12-31
    assert MIN_EPOCH == -719162 * 86400
    assert MAX_EPOCH == 2932896 * 86400 + 86399


@pytest.mark.parametrize("value", [MIN_EPOCH, MAX_EPOCH, 0.0, -1.5, 1714564800.25])
def test_accepted_values_round_trip(value: float) -> None:
    assert check_epoch(value) == value
    assert to_epoch(to_datetime(value)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        (1e18, "outside"),
        (MIN_EPOCH - 1, "outside"),
        (MAX_EPOCH + 1, "outside"),
    ],
)
def test_refused_values(value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_epoch(value)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # UTC year 0
        "9999-12-31T23:59:59-14:00",  # UTC year 10000
        "1e18",
        "Infinity",
        "NaN",
        "-inf",
    ],
)
def test_text_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        epoch_seconds(text)


def test_aware_and_naive_datetimes() -> None:
    assert to_epoch(dt.datetime(1970, 1, 2)) == 86400.0  # naive = UTC
    assert to_epoch(dt.datetime(1970, 1, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == 86400
    with pytest.raises(ValueError, match="outside"):
        to_epoch(dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))))


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        (1e18, dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (math.inf, dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (-1e18, dt.datetime(1, 1, 1, tzinfo=UTC)),
        (-math.inf, dt.datetime(1, 1, 1, tzinfo=UTC)),
        (86400.5, dt.datetime(1970, 1, 2, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_reading_back_clamps_what_older_versions_stored(stored: float, read: dt.datetime) -> None:
    assert to_datetime(stored) == read
