"""Volume anomalies: a delivery that passes every check of its control file but holds far fewer
records than its feed delivered on the days before (a producer's extract that stopped early, a
filter gone wrong). It still loads; a warning goes on record for an operator to look at.

The baseline is the feed's own history, never a fixed number: the median record count of the
last `BASELINE_DAYS` days delivered before it, once at least `MIN_BASELINE` of them are known.
A median of a week absorbs the weekly rhythm of traffic; half of it is a drop no ordinary
weekend or holiday explains. The count must also be implausible as the feed's ordinary swing:
below the `SIGNIFICANCE` quantile of a count with the median as its mean and the feed's own
spread. A feed of a few records a day (tickets, surveys) swings by half from chance alone
(Poisson: 2 records against a median of 6 is chance, 6 against 20 is not); a feed whose days
swing more than chance (top-ups that bunch around paydays and run low before them) gets a
negative binomial whose extra spread is measured, robustly (median absolute deviation), over
its last `SPREAD_DAYS` delivered days once `MIN_SPREAD` of them are known.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import date

import pyarrow.compute as pc

from crm_pipeline.settings import LakeLayout

BASELINE_DAYS = 7
MIN_BASELINE = 3
DROP_RATIO = 0.5
SIGNIFICANCE = 1e-3
SPREAD_DAYS = 28
MIN_SPREAD = 14


def overdispersion(counts: list[int]) -> float:
    """phi in variance = mean + phi * mean^2 from a robust spread of `counts` (0: no more than
    Poisson's). The median absolute deviation ignores a few outlying days (a payday spike)."""
    if len(counts) < MIN_SPREAD:
        return 0.0
    centre = statistics.median(counts)
    if centre <= 0:
        return 0.0
    sd = 1.4826 * statistics.median(abs(n - centre) for n in counts)  # the normal-consistent MAD
    return max(0.0, (sd * sd - centre) / (centre * centre))


def volume_drop(history: dict[date, int], day: date, rows: int) -> str | None:
    """Why `rows` records on `day` are a drop against `history` (business date -> records), or None."""
    prior = [history[d] for d in sorted(history) if d < day]
    before = prior[-BASELINE_DAYS:]
    if len(before) < MIN_BASELINE:
        return None
    median = statistics.median(before)
    if median <= 0 or rows >= DROP_RATIO * median:
        return None
    from scipy.stats import nbinom, poisson

    phi = overdispersion(prior[-SPREAD_DAYS:])
    if phi > 0:
        size = 1 / phi
        chance = nbinom.cdf(rows, size, size / (size + median))
    else:
        chance = poisson.cdf(rows, median)
    if chance >= SIGNIFICANCE:  # as few could come from the feed's ordinary swing
        return None
    return (f"{rows:,} records, {rows / median:.0%} of the median of the {len(before)} days delivered "
            f"before ({median:,.0f}); the control file matches, so the producer's extract itself is short")


def delivered_volumes(lake: LakeLayout, loaded: dict[tuple[str, date], str]) -> dict[str, dict[date, int]]:
    """feed -> business date -> records read of the delivery loaded for that day (from crm_ops)."""
    from crm_pipeline.io import delta_rs

    runs = delta_rs.read(lake.ops("pipeline_runs"), ["delivery_id", "rows_read"], pc.field("status") == "SUCCESS")
    if runs is None:
        return {}
    per_delivery: dict[str, int] = defaultdict(int)
    for delivery_id, rows in zip(runs.column("delivery_id").to_pylist(), runs.column("rows_read").to_pylist()):
        per_delivery[delivery_id] += rows or 0
    out: dict[str, dict[date, int]] = defaultdict(dict)
    for (feed, day), delivery_id in loaded.items():
        if delivery_id in per_delivery:
            out[feed][day] = per_delivery[delivery_id]
    return out
