"""reidcore.timestamps.epoch_seconds against hand-computed epoch seconds."""

from __future__ import annotations

import pytest

from reidcore.timestamps import epoch_seconds

# 2024-05-01T12:00:00 UTC: 19844 days after 1970-01-01, plus 12 hours.
NOON_UTC = 19844 * 86400 + 12 * 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5", 12.5),
        ("  60 ", 60.0),
        ("-3", -3.0),
        ("1714564800", 1714564800.0),
        ("2024-05-01T12:00:00Z", NOON_UTC),
        ("2024-05-01T12:00:00", NOON_UTC),  # no offset: UTC
        ("2024-05-01 12:00:00", NOON_UTC),
        ("2024-05-01T14:00:00+02:00", NOON_UTC),
        ("2024-05-01T12:00:00.250Z", NOON_UTC + 0.25),
        ("2024-05-01", NOON_UTC - 12 * 3600),
    ],
)
def test_numbers_and_iso_times(text: str, expected: float) -> None:
    assert epoch_seconds(text) == expected


def test_hand_computed_noon_is_the_unix_time_of_that_day() -> None:
    assert NOON_UTC == 1714564800


@pytest.mark.parametrize("text", ["yesterday", "", "12:00 May 1", "2024-13-01T00:00:00"])
def test_other_text_is_a_value_error_quoting_it(text: str) -> None:
    with pytest.raises(ValueError, match=f"timestamp {text!r} is not epoch seconds or ISO 8601"):
        epoch_seconds(text)
