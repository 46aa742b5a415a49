"""The run summary of `crm analyse`: what an analyst checks first, for the latest month built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def _pct(x) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def print_summary(tables: dict[str, DataFrame], months: list[date], progress: Callable[[str], None] = print) -> None:
    """Per built month: subscribers; for the latest: segments, concentration, CLV fits, upgrade
    model against the hand rule, key accounts needing attention and satisfaction drivers."""
    latest = max(months)
    counts = dict(tables["subscriber_month"].groupBy("month").count().collect())
    conc = {r.month: r for r in tables["revenue_concentration"].collect()}
    for m in months:
        c = conc.get(m)
        progress(f"  {m:%Y-%m}: {counts.get(m, 0):,} subscriber-months, top-20 % revenue share "
                 f"{_pct(c.top20_revenue_share if c else None)}, Gini {c.gini if c and c.gini is not None else float('nan'):.3f}")

    def of_latest(name: str) -> list:
        col = "period_start" if name == "satisfaction_drivers" else "month"
        return tables[name].where(F.col(col) == F.lit(latest)).collect()

    progress(f"\nvalue segments {latest:%Y-%m}   subscribers  revenue share  revenue growth  ARPU CNY  mean CLV CNY")
    for r in sorted(of_latest("segment_summary"), key=lambda r: r.value_segment):
        arpu = "n/a" if r.arpu_fen is None else f"{r.arpu_fen / 100:.2f}"
        clv = "n/a" if r.avg_clv_fen is None else f"{r.avg_clv_fen / 100:,.0f}"
        progress(f"  {r.value_segment:<14}{r.subscribers:>14,}  {_pct(r.revenue_share):>13}  "
                 f"{_pct(r.revenue_growth):>14}  {arpu:>8}  {clv:>12}")
    levels: dict[str, int] = {}
    for r in of_latest("clv_model"):
        levels[r.fit_level or "none"] = levels.get(r.fit_level or "none", 0) + 1
    progress("CLV retention fits (cohort groups by level): "
             + ", ".join(f"{k} {v}" for k, v in sorted(levels.items())))
    for r in of_latest("migration_model"):
        if r.auc is not None:
            progress(f"5G migration model ({r.algorithm}): out-of-time AUC {r.auc:.3f} on {r.test_month:%Y-%m} "
                     f"(hand rule 'heavy data users': {r.rule_auc:.3f}), {r.n_train:,} training rows")
        else:
            progress(f"5G migration model: no out-of-time evaluation ({r.note})")
    ka = sorted(of_latest("key_account_month"), key=lambda r: (r.health_score, r.group_id))
    if ka:
        progress(f"key accounts: {len(ka)} groups; lowest health:")
        for r in ka[:3]:
            progress(f"  {r.group_id}: {r.health_score:.1f}  {r.health_reasons}")
    drivers = of_latest("satisfaction_drivers")
    if drivers:
        progress(f"satisfaction drivers {latest:%Y-%m} ({drivers[0].respondents} respondents, "
                 f"R² {drivers[0].r_squared:.2f}): " + ", ".join(
                     f"{r.driver} {r.std_coefficient:.2f} (p {r.p_value:.3f})"
                     for r in sorted(drivers, key=lambda r: -r.std_coefficient)))
    else:
        progress(f"satisfaction drivers {latest:%Y-%m}: no survey period with enough respondents")
