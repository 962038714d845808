"""Windows, UTC days and months, and micro-dollars: the periods every store keys limits and budgets by."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.state.base import (
    bucket_index,
    from_micro,
    seconds_to_next_day,
    seconds_to_next_month,
    seconds_to_next_window,
    seconds_until_bucket,
    to_micro,
    utc_day,
    utc_month,
)


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_windows_slide_by_whole_seconds() -> None:
    start = ts(2025, 1, 1, 0, 0, 59)
    assert bucket_index(start + 0.999) == bucket_index(start) == bucket_index(ts(2025, 1, 1, 0, 1, 0)) - 1
    assert seconds_until_bucket(bucket_index(start) + 1, start + 0.25) == 0.75
    # what is counted at 0:00:59.5 has left the window (60 s plus the current second) at 0:02:00
    assert seconds_to_next_window(start + 0.5) == 60.5


def test_days_and_months_are_utc() -> None:
    new_year_eve = ts(2025, 12, 31, 23, 0)
    assert (utc_day(new_year_eve), utc_month(new_year_eve)) == ("2025-12-31", "2025-12")
    assert seconds_to_next_day(new_year_eve) == 3600.0
    assert seconds_to_next_month(new_year_eve) == 3600.0
    assert seconds_to_next_month(ts(2024, 2, 28)) == 2 * 86_400.0  # a leap year
    assert seconds_to_next_day(ts(2025, 3, 1)) == 86_400.0


def test_micro_dollars_round_trip() -> None:
    assert to_micro(0.1) * 3 == to_micro(0.3)
    assert from_micro(sum(to_micro(0.1) for _ in range(10))) == 1.0
