"""What the DAGs decide, without Airflow: which delivery a daily run waits for and until when, and
which months the monthly analytics must (re)build.

The DAG side (crm_pipeline.dag_support) calls these from a sensor and a task; they read the
landing zone's folder listing and the lake's ops tables only (no Spark), so they are cheap to
run inside an Airflow worker and easy to test.

The clock: every judgement takes `now` (local time of config/operations.json's timezone):
`crm_pipeline.status.now`, the wall clock or `CRM_AS_OF` when set, so a replay or a test judges a
day as it would have been judged that morning (as `crm status --as-of` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from crm_pipeline.feeds import load_feeds
from crm_pipeline.months import add_months
from crm_pipeline.settings import LakeLayout
from crm_pipeline.status import OperationsConfig

#: the sensor's verdicts
ARRIVED, WAITING, GIVE_UP = "ARRIVED", "WAITING", "GIVE_UP"


@dataclass(frozen=True)
class Awaited:
    """The delivery of `feed` a daily run waits for: a complete delivery dated `first`..`last`,
    due at `due` (local time); the run goes on without it `wait` after that."""

    feed: str
    first: date
    last: date
    due: datetime
    wait: timedelta
    label: str

    @property
    def give_up_at(self) -> datetime:
        return self.due + self.wait


def awaited(feed: str, business_date: date, config: OperationsConfig) -> Awaited | str:
    """What the daily run for `business_date` (it runs the morning after) waits for of `feed`, or
    why it waits for nothing: an optional feed; a monthly feed (the bill of the month before)
    except on the run of its due day."""
    expect = config.expectation(feed)
    if not expect.expected:
        return f"{feed} is optional (config/operations.json): not waited for"
    if load_feeds()[feed].cadence == "monthly":
        run_day = business_date + timedelta(days=1)
        month = add_months(run_day.replace(day=1), -1)
        due = expect.due(month)
        if due.date() != run_day:
            return f"the {feed} of {month:%Y-%m} is due {due:%Y-%m-%d %H:%M}: not waited for on this run"
        return Awaited(feed, run_day.replace(day=1), run_day, due, expect.wait, f"{feed} of {month:%Y-%m}")
    return Awaited(feed, business_date, business_date, expect.due(business_date), expect.wait,
                   f"{feed} {business_date}")


def arrived(landing: str, what: Awaited) -> bool:
    """A complete delivery (control file written) of the awaited feed and dates is in the landing zone."""
    from crm_pipeline.ingest.landing import discover

    return bool(discover(landing, [what.feed], what.first, what.last))


def verdict(is_there: bool, what: Awaited, now: datetime, previous_poke: datetime | None) -> tuple[str, bool]:
    """(ARRIVED | WAITING | GIVE_UP, whether to alert that it is late). The late alert goes out
    once: on the first look past its due time (`previous_poke`: when the sensor last looked, None
    on its first look)."""
    if is_there:
        return ARRIVED, False
    late = now >= what.due
    first_late_look = late and (previous_poke is None or previous_poke < what.due)
    return (GIVE_UP if now >= what.give_up_at else WAITING), first_late_look


def late_message(what: Awaited, now: datetime, landing: str) -> str:
    hours = (now - what.due).total_seconds() / 3600
    return (f"{what.label} is late: due {what.due:%Y-%m-%d %H:%M}, not complete in {landing} at "
            f"{now:%Y-%m-%d %H:%M} ({hours:.1f} h late); the ingest waits until {what.give_up_at:%H:%M}, then "
            "goes on without it (a later run loads it once its control file lands)")


# ---------------------------------------------------------------------------------------------
# Months to (re)build


def month_inputs(month: date, loaded: dict[tuple[str, date], str]) -> dict[tuple[str, date], str]:
    """The deliveries a month's gold build reads, of those loaded ((feed, business date) ->
    delivery id): every feed's days of the month and the late days after it, and the monthly
    feeds' (the bill's) deliveries dated in the month after (a month's bill comes then)."""
    from crm_pipeline.pipeline.monthly import LATE_DAYS, month_days, next_month

    days = set(month_days(month)) | {next_month(month) + timedelta(days=i) for i in range(LATE_DAYS)}
    monthly = {name for name, spec in load_feeds().items() if spec.cadence == "monthly"}
    following = next_month(month)
    return {(feed, d): delivery for (feed, d), delivery in loaded.items()
            if (d.replace(day=1) == following if feed in monthly else d in days)}


def built_inputs(lake: LakeLayout) -> dict[date, set[str]]:
    """Per month, the delivery ids of its latest gold build (crm_ops month_inputs)."""
    from crm_pipeline.io import delta_rs

    got = delta_rs.read(lake.ops("month_inputs"), ["month", "delivery_id", "built_at"])
    if got is None:
        return {}
    latest: dict[date, datetime] = {}
    rows = got.to_pylist()
    for r in rows:
        latest[r["month"]] = max(latest.get(r["month"], r["built_at"]), r["built_at"])
    out: dict[date, set[str]] = {m: set() for m in latest}
    for r in rows:
        if r["built_at"] == latest[r["month"]]:
            out[r["month"]].add(r["delivery_id"])
    return out


def months_to_build(lake: LakeLayout) -> dict[date, str]:
    """Complete months whose gold is missing or older than their deliveries, with why: newly
    complete; built from deliveries since replaced or added (a re-delivery, a late file); and every
    complete month after the first of those (its trailing windows read the rebuilt ones)."""
    from crm_pipeline import ops
    from crm_pipeline.pipeline.monthly import lake_readiness
    from crm_pipeline.status import _gold_months

    loaded = ops.loaded_deliveries(lake)
    complete = [m for m, waits in lake_readiness(lake).items() if not waits]
    built = built_inputs(lake)
    out: dict[date, str] = {}
    in_gold = _gold_months(lake) if set(complete) - set(built) else set()
    for m in complete:
        now_in = set(month_inputs(m, loaded).values())
        if m not in built:
            out[m] = "built with no record of the deliveries it read" if m in in_gold else "complete, not built yet"
        elif now_in != built[m]:
            changed = len(now_in - built[m])
            out[m] = f"{changed} deliver{'y' if changed == 1 else 'ies'} loaded since its last build"
    if out:
        first = min(out)
        for m in complete:
            if m > first and m not in out:
                out[m] = f"reads {first:%Y-%m}, rebuilt"
    return dict(sorted(out.items()))
