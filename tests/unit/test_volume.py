"""The volume-drop rule: against the feed's own recent days, never a fixed count."""

from __future__ import annotations

from datetime import date, timedelta

from crm_pipeline.ingest.volume import volume_drop

D = date(2026, 3, 1)


def _days(counts: list[int]) -> dict[date, int]:
    return {D + timedelta(days=i): n for i, n in enumerate(counts)}


def test_a_day_far_below_the_median_of_the_days_before_is_a_drop():
    history = _days([1000, 1100, 900, 1050])
    why = volume_drop(history, D + timedelta(days=4), 300)
    assert why is not None and "300 records" in why and "29%" in why and "1,025" in why


def test_the_weekly_rhythm_and_a_busy_day_are_no_drop():
    weekdays_weekends = [1000, 1000, 1000, 1000, 1000, 600, 550] * 2
    history = _days(weekdays_weekends)
    for i, n in enumerate(weekdays_weekends[7:], start=7):
        assert volume_drop(history, D + timedelta(days=i), n) is None
    assert volume_drop(history, D + timedelta(days=14), 5000) is None


def test_too_short_a_history_judges_nothing():
    assert volume_drop(_days([1000, 1000]), D + timedelta(days=2), 1) is None
    assert volume_drop({}, D, 0) is None


def test_only_the_last_seven_days_before_count():
    # an old busy era and later days do not move the baseline of day 10
    history = _days([100_000] * 3 + [100] * 7 + [0, 100_000])
    assert volume_drop(history, D + timedelta(days=10), 60) is None
    assert volume_drop(history, D + timedelta(days=10), 40) is not None
    assert volume_drop(_days([0, 0, 0]), D + timedelta(days=3), 0) is None  # a feed that is always empty


def test_a_small_feed_swinging_by_chance_is_no_drop_but_an_empty_day_of_a_steady_one_is():
    # a few records a day: half the median happens by chance (Poisson), so no warning
    assert volume_drop(_days([6, 5, 7, 6, 8, 6, 6]), D + timedelta(days=7), 2) is None
    assert volume_drop(_days([1, 0, 1, 1, 2, 1, 1]), D + timedelta(days=7), 0) is None
    # ... unless the count is far out of chance's reach
    assert volume_drop(_days([20, 22, 19, 21, 20, 18, 20]), D + timedelta(days=7), 5) is not None
    assert volume_drop(_days([30] * 7), D + timedelta(days=7), 0) is not None
