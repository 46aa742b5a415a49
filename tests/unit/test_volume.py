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


def _negative_binomial(mean: float, phi: float, days: int, seed: int) -> list[int]:
    import numpy as np

    size = 1 / phi
    return [int(n) for n in np.random.default_rng(seed).negative_binomial(size, size / (size + mean), days)]


def test_a_feed_swinging_more_than_chance_is_judged_by_its_own_spread():
    from crm_pipeline.ingest.volume import overdispersion

    # a small feed whose days swing far more than Poisson's (top-ups bunching and running low)
    swinging = [20, 35, 12, 28, 8, 40, 18, 22, 15, 30, 10, 25, 45, 14, 20, 33, 9, 27, 17, 38, 21, 11, 26, 19, 31, 16,
                24, 20]
    assert 0.1 < overdispersion(swinging) < 0.5
    day = D + timedelta(days=28)
    # a day of 3 is its ordinary swing; judged by the last week alone (Poisson), the same day is a drop
    assert volume_drop(_days(swinging), day, 3) is None
    assert volume_drop(_days(swinging[-7:]), D + timedelta(days=7), 3) is not None
    # a silent day is a drop even for this feed
    assert volume_drop(_days(swinging), day, 0) is not None
    # a steady feed (weekly rhythm, a few percent of noise): its small spread still makes half a day a drop
    steady = [round(n * f) for n, f in zip([100_000] * 5 + [60_000] * 2, [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03])] * 4
    assert 0 < overdispersion(steady) < 0.01
    assert volume_drop(_days(steady), D + timedelta(days=28), 45_000) is not None
    # a big feed as swinging as the small one still drops when it loses most of a day
    big = _negative_binomial(2_000, 0.3, 28, seed=2)
    assert volume_drop(_days(big), D + timedelta(days=28), 0) is not None
    # fewer than 14 days judge by Poisson alone
    assert overdispersion(swinging[:13]) == 0.0
