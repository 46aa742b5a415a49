"""The operations view: what arrived, what is late, what was rejected, what ran and failed, and
which months are published or waiting (and why), from the lake's ops tables alone (no Spark).

`crm status` prints it; the publish writes the same rows to `crm_ops.delivery_status` and
`crm_ops.month_status` for BI. Expected arrival times come from `config/operations.json`
(`CRM_OPERATIONS_CONFIG` points elsewhere); every time shown is local time of its timezone,
and `as_of` (default now) is the clock everything is judged against, so a backfill or a test
can ask "what did the status look like on the morning of 5 September".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from crm_pipeline.errors import UsageError
from crm_pipeline.feeds import load_feeds
from crm_pipeline.io import delta_rs
from crm_pipeline.months import add_months
from crm_pipeline.settings import LakeLayout, resource_dir

#: business days `crm status` and crm_ops.delivery_status look back over by default
DAYS = 7

#: states of a feed's business date, worst first (the order `crm status` sorts by)
LATE, FAILED, ARRIVED, IN_PROGRESS, LOADED, DUE = "LATE", "FAILED", "ARRIVED", "IN_PROGRESS", "LOADED", "DUE"


@dataclass(frozen=True)
class Expectation:
    """When a feed's delivery is due: `days_after` its business date at `by` (daily feeds), or on
    `day_of_next_month` at `by` (monthly feeds); never, for an optional feed. The daily DAG waits
    `wait` past the due time for a late delivery before it ingests without it."""

    expected: bool = True
    days_after: int = 1
    day_of_next_month: int | None = None
    by: time = time(6, 0)
    wait: timedelta = timedelta(hours=2)

    def due(self, business_date: date) -> datetime:
        if self.day_of_next_month is not None:
            month = add_months(business_date.replace(day=1), 1)
            return datetime.combine(month.replace(day=self.day_of_next_month), self.by)
        return datetime.combine(business_date + timedelta(days=self.days_after), self.by)


@dataclass(frozen=True)
class OperationsConfig:
    timezone: ZoneInfo
    feeds: dict[str, Expectation] = field(default_factory=dict)

    def expectation(self, feed: str) -> Expectation:
        return self.feeds[feed]


def load_operations_config(path: Path | None = None) -> OperationsConfig:
    """config/operations.json: the timezone and each feed's expected arrival (unknown keys or feeds
    are a usage error naming the file)."""
    path = Path(path or os.environ.get("CRM_OPERATIONS_CONFIG", resource_dir("config") / "operations.json"))
    raw = json.loads(path.read_text(encoding="utf-8"))
    feeds = load_feeds()
    unknown = set(raw.get("feeds", {})) - set(feeds)
    if unknown:
        raise UsageError(f"{path}: no such feed(s) {', '.join(sorted(unknown))} (feeds: {', '.join(sorted(feeds))})")

    def parse(entry: dict, where: str) -> dict:
        allowed = {"expected", "days_after", "day_of_next_month", "by", "wait_hours"}
        if set(entry) - allowed:
            raise UsageError(f"{path}: {where} has unknown setting(s) {', '.join(sorted(set(entry) - allowed))}")
        out = dict(entry)
        if "by" in out:
            try:
                out["by"] = time.fromisoformat(out["by"])
            except ValueError:
                raise UsageError(f"{path}: {where}.by must be HH:MM, not {entry['by']!r}") from None
        if "wait_hours" in out:
            hours = out.pop("wait_hours")
            if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 <= hours <= 24:
                raise UsageError(f"{path}: {where}.wait_hours must be a number of hours from 0 to 24, not {hours!r}")
            out["wait"] = timedelta(hours=hours)
        return out

    default = parse(raw.get("default", {}), "default")
    expectations = {}
    for name, spec in feeds.items():
        settings = {**default, **parse(raw.get("feeds", {}).get(name, {}), f"feeds.{name}")}
        if spec.cadence == "monthly":
            settings.setdefault("day_of_next_month", 1)
            settings.pop("days_after", None)
        elif "day_of_next_month" in settings and name in raw.get("feeds", {}):
            raise UsageError(f"{path}: feeds.{name} is a daily feed; day_of_next_month is for monthly feeds")
        else:
            settings.pop("day_of_next_month", None)
        if spec.cadence == "optional":
            settings.setdefault("expected", False)
        expectations[name] = Expectation(**settings)
    return OperationsConfig(ZoneInfo(raw.get("timezone", "Asia/Shanghai")), expectations)


def local(ts: datetime | None, tz: ZoneInfo) -> datetime | None:
    """A UTC timestamp of the ops tables (naive) as naive local time of `tz`."""
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc).astimezone(tz).replace(tzinfo=None)


def _rows(lake: LakeLayout, table: str, columns: list[str] | None = None, where=None) -> list[dict]:
    got = delta_rs.read(lake.ops(table), columns, where)
    return [] if got is None else got.to_pylist()


@dataclass
class Status:
    as_of: datetime  # local time
    deliveries: list[dict]
    months: list[dict]
    runs: list[dict]
    checks: list[dict]
    quarantine: list[dict]
    timezone: str = "Asia/Shanghai"

    def late(self) -> list[dict]:
        """Deliveries past their expected arrival and not loaded, and failed ones."""
        return [d for d in self.deliveries if d["status"] == FAILED or d["hours_late"]]

    def as_json(self) -> str:
        def default(value):
            return value.isoformat() if isinstance(value, (date, datetime)) else str(value)

        return json.dumps({"as_of": self.as_of, "timezone": self.timezone, "deliveries": self.deliveries,
                           "months": self.months, "runs": self.runs, "failed_checks": self.checks,
                           "quarantine": self.quarantine}, default=default, indent=1)


def delivery_status(lake: LakeLayout, as_of: datetime, days: int, config: OperationsConfig,
                    landing: str | None = None) -> list[dict]:
    """One row per daily feed and business date of the `days` days before `as_of`, and per month
    of a monthly feed (the bill) whose delivery fell due in them or falls due next, with the
    delivery loaded, its records (loaded, quarantined, duplicate) and a state:

    LOADED; FAILED (a delivery was rejected and none is loaded); ARRIVED (complete in the landing
    zone, not ingested yet); IN_PROGRESS (data files in the landing zone, no control file yet);
    LATE (past its expected arrival and none of the above); DUE (not expected yet).
    The landing states need `landing`."""
    tz = config.timezone
    loaded: dict[tuple, dict] = {}
    count: dict[tuple, int] = {}
    for r in _rows(lake, "deliveries", ["feed", "business_date", "delivery_id", "status", "logged_at"],
                   pc.field("status") == "LOADED"):
        key = (r["feed"], r["business_date"])
        count[key] = count.get(key, 0) + 1
        if key not in loaded or (r["logged_at"], r["delivery_id"]) > (loaded[key]["logged_at"],
                                                                    loaded[key]["delivery_id"]):
            loaded[key] = r
    records: dict[str, dict] = {}
    failures: dict[tuple, str] = {}
    for r in _rows(lake, "pipeline_runs", ["feed", "business_date", "delivery_id", "status", "rows_loaded",
                                           "rows_quarantined", "rows_duplicate", "message"],
                   pc.field("feed").is_valid()):
        if r["status"] == "FAILED":
            failures[(r["feed"], r["business_date"])] = r["message"] or "failed"
        elif r["delivery_id"]:
            acc = records.setdefault(r["delivery_id"], {"rows_loaded": 0, "rows_quarantined": 0, "rows_duplicate": 0})
            for c in acc:
                acc[c] += r[c] or 0
    window = [as_of.date() - timedelta(days=i) for i in range(days, 0, -1)]
    arrived, unfinished = _landing_state(landing, window) if landing else ({}, {})
    loaded_ids = {r["delivery_id"] for r in loaded.values()} | set(records)
    from crm_pipeline.pipeline.monthly import bill_months as billed

    bill_months = billed(lake)
    out = []
    feeds = load_feeds()
    for feed, expect in config.feeds.items():
        if not expect.expected and not any(f == feed for f, _ in loaded):
            continue  # an optional feed this operator does not deliver
        if feeds[feed].cadence == "monthly":
            out += _monthly_rows(feed, expect, window, as_of, loaded, count, records, bill_months, tz)
            continue
        for d in window:
            key = (feed, d)
            due = expect.due(d) if expect.expected else None
            row = _row(feed, d, due, loaded.get(key), count.get(key, 0), records, tz)
            if key in loaded:
                if key in arrived and arrived[key] not in loaded_ids:
                    row.update(status=ARRIVED, detail="a re-delivery is in the landing zone; not ingested yet")
            elif key in failures and key not in arrived:
                row.update(status=FAILED, detail=failures[key])
            elif key in arrived:
                row.update(status=ARRIVED, detail="complete in the landing zone; not ingested yet")
            elif key in unfinished:
                row.update(status=IN_PROGRESS, detail=f"{unfinished[key]} file(s) without their control file")
            elif due is not None and as_of > due:
                row.update(status=LATE)
            elif due is None:
                continue  # optional and not delivered that day
            if key not in loaded and due is not None and as_of > due:
                row["hours_late"] = round((as_of - due).total_seconds() / 3600, 1)
            out.append(row)
    return out


def _row(feed: str, business_date: date, due: datetime | None, entry: dict | None, deliveries: int,
         records: dict, tz: ZoneInfo) -> dict:
    row = dict(feed=feed, business_date=business_date, status=DUE, expected_by=due, delivery_id=None,
               loaded_at=None, deliveries=deliveries, rows_loaded=None, rows_quarantined=None,
               rows_duplicate=None, hours_late=None, detail=None)
    if entry is not None:
        row.update(status=LOADED, delivery_id=entry["delivery_id"], loaded_at=local(entry["logged_at"], tz),
                   **records.get(entry["delivery_id"], {}))
    return row


def _monthly_rows(feed, expect, window, as_of, loaded, count, records, bill_months, tz) -> list[dict]:
    """A monthly feed (the bill of month M, due in M+1): a row per month whose delivery fell due in
    the window, and one for the next due; business_date is the month, the delivery the latest one
    dated in M+1, LOADED once the silver bill lines of M exist."""
    out = []
    month = add_months(window[0].replace(day=1), -1)
    while True:
        due = expect.due(month)
        if due.date() >= window[0]:
            following = add_months(month, 1)
            dated = sorted((k for k in loaded if k[0] == feed and k[1].replace(day=1) == following),
                           key=lambda k: loaded[k]["logged_at"])
            entry = loaded[dated[-1]] if dated and month in bill_months else None
            row = _row(feed, month, due, entry, sum(count[k] for k in dated), records, tz)
            row["detail"] = f"bill of {month:%Y-%m}"
            if entry is None and as_of > due:
                row.update(status=LATE, hours_late=round((as_of - due).total_seconds() / 3600, 1))
            out.append(row)
        if due > as_of:
            return out
        month = add_months(month, 1)


def _landing_state(landing: str, window: list[date]) -> tuple[dict[tuple, str], dict[tuple, int]]:
    """(feed, day) -> delivery id of the complete deliveries in the landing zone, and -> number of
    files of the folders still without a control file, for the days of `window`."""
    from crm_pipeline.ingest.landing import discover

    incomplete = []
    complete = discover(landing, list(load_feeds()), window[0], window[-1], incomplete=incomplete)
    return ({(d.feed, d.business_date): d.delivery_id for d in complete},
            {(f.feed, f.business_date): len(f.files) for f in incomplete})


def month_status(lake: LakeLayout, as_of: datetime, tz: ZoneInfo) -> list[dict]:
    """One row per month from the first delivered day to `as_of`'s month: PUBLISHED (in the
    warehouse, crm_ops.publications), BUILT (in gold, not published yet), COMPLETE (every delivery
    in, not built yet) or WAITING, with what it waits for (for a built month: a rebuild, when
    deliveries were loaded since its build)."""
    from crm_pipeline.orchestration import months_to_build
    from crm_pipeline.pipeline.monthly import lake_readiness

    readiness = lake_readiness(lake, through=as_of.date())
    built = _gold_months(lake)
    rebuild = months_to_build(lake)
    published: dict[date, dict] = {}
    for r in _rows(lake, "publications", ["month", "run_id", "published_at", "rows", "warehouse"],
                   pc.field("table_name") == "subscriber_month"):
        if r["month"] not in published or r["published_at"] > published[r["month"]]["published_at"]:
            published[r["month"]] = r
    out = []
    for month, waits in readiness.items():
        row = dict(month=month, status="WAITING", waiting_for="; ".join(waits) or None, published_at=None,
                   published_run_id=None, published_rows=None)
        if month in published:
            p = published[month]
            row.update(status="PUBLISHED", published_at=local(p["published_at"], tz), published_run_id=p["run_id"],
                       published_rows=p["rows"])
            if month in built and month in rebuild:
                row.update(waiting_for=f"a rebuild: {rebuild[month]}")
        elif month in built:
            row.update(status="BUILT", waiting_for=f"a rebuild: {rebuild[month]}" if month in rebuild
                       else "the next publish")
        elif not waits:
            row.update(status="COMPLETE", waiting_for="the monthly analytics (crm analyse)")
        out.append(row)
    return out


def _gold_months(lake: LakeLayout) -> set[date]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(lake.gold("subscriber_month"))
    except TableNotFoundError:
        return set()
    return {date.fromisoformat(p["month"]) for p in table.partitions()}


def recent_runs(lake: LakeLayout, limit: int, tz: ZoneInfo) -> list[dict]:
    """The last `limit` runs (by start): DAG, tasks, start, duration, state (FAILED if any step
    failed), records loaded and quarantined, and what failed."""
    runs: dict[str, dict] = {}
    for r in _rows(lake, "pipeline_runs", ["run_id", "dag_id", "task_id", "started_at", "finished_at", "status",
                                           "rows_loaded", "rows_quarantined", "message"]):
        run = runs.setdefault(r["run_id"], dict(run_id=r["run_id"], dag_id=r["dag_id"], tasks=[], started_at=None,
                                                finished_at=None, status="SUCCESS", rows_loaded=0,
                                                rows_quarantined=0, failure=None))
        if r["task_id"] not in run["tasks"]:
            run["tasks"].append(r["task_id"])
        run["started_at"] = min(filter(None, [run["started_at"], r["started_at"]]), default=None)
        run["finished_at"] = max(filter(None, [run["finished_at"], r["finished_at"]]), default=None)
        run["rows_loaded"] += r["rows_loaded"] or 0
        run["rows_quarantined"] += r["rows_quarantined"] or 0
        if r["status"] == "FAILED":
            run["status"], run["failure"] = "FAILED", r["message"]
    latest = sorted(runs.values(), key=lambda r: r["started_at"] or datetime.min, reverse=True)[:limit]
    for run in latest:
        if run["started_at"] and run["finished_at"]:
            run["seconds"] = round((run["finished_at"] - run["started_at"]).total_seconds(), 1)
        run["started_at"], run["finished_at"] = local(run["started_at"], tz), local(run["finished_at"], tz)
        run["tasks"] = ", ".join(run["tasks"])
    return latest


def failed_checks(lake: LakeLayout, first_day: date, tz: ZoneInfo) -> list[dict]:
    """Data-quality checks that failed for business dates from `first_day`, newest first."""
    rows = _rows(lake, "data_quality", None, (pc.field("success") == False)  # noqa: E712
                 & (pc.field("business_date") >= first_day))
    for r in rows:
        r["validated_at"] = local(r["validated_at"], tz)
    return sorted(rows, key=lambda r: (r["business_date"], r["validated_at"]), reverse=True)


def quarantined(lake: LakeLayout, first_day: date) -> list[dict]:
    """Quarantined records of business dates from `first_day`: per feed and reason, their number and
    the first record's file and line (raw lines stay in the restricted zone)."""
    got = delta_rs.read(lake.quarantine, ["feed", "business_date", "source_file", "line_no", "reject_reason",
                                          "reject_detail"], pc.field("business_date") >= first_day)
    out: dict[tuple, dict] = {}
    for r in [] if got is None else got.sort_by([("business_date", "ascending"), ("source_file", "ascending"),
                                                  ("line_no", "ascending")]).to_pylist():
        key = (r["feed"], r["reject_reason"])
        if key not in out:
            out[key] = dict(feed=r["feed"], reason=r["reject_reason"], records=0,
                            example=f"{r['source_file']} line {r['line_no']}: {r['reject_detail']}")
        out[key]["records"] += 1
    return sorted(out.values(), key=lambda r: (-r["records"], r["feed"], r["reason"]))


def now(config: OperationsConfig) -> datetime:
    """The local time of the operations timezone, naive: the wall clock, or `CRM_AS_OF`
    (YYYY-MM-DDTHH:MM, local) when set, so a replay or a test judges deliveries as they would have
    been judged that morning (the DAGs' delivery sensors and the crm_ops view of a publish)."""
    fixed = os.environ.get("CRM_AS_OF")
    if fixed:
        try:
            return datetime.fromisoformat(fixed).replace(tzinfo=None)
        except ValueError:
            raise UsageError(f"CRM_AS_OF={fixed!r}: expected local time as YYYY-MM-DDTHH:MM") from None
    return datetime.now(config.timezone).replace(tzinfo=None)


def status(lake: LakeLayout, as_of: datetime | None = None, days: int = DAYS, runs: int = 10,
           landing: str | None = None, config: OperationsConfig | None = None) -> Status:
    """Everything `crm status` shows, judged at `as_of` (local time; default now)."""
    config = config or load_operations_config()
    as_of = as_of or now(config)
    first = as_of.date() - timedelta(days=days)
    return Status(
        as_of=as_of,
        deliveries=delivery_status(lake, as_of, days, config, landing),
        months=month_status(lake, as_of, config.timezone),
        runs=recent_runs(lake, runs, config.timezone),
        checks=failed_checks(lake, first, config.timezone),
        quarantine=quarantined(lake, first),
        timezone=config.timezone.key,
    )


def _table(headers: list[str], rows: list[list], right: set[int] = frozenset()) -> list[str]:
    cells = [[("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  " + "  ".join(v.rjust(w) if i in right else v.ljust(w)
                                for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return [line(headers)] + [line(r) for r in cells]


def render(st: Status, where: str, days: int) -> str:
    """The text `crm status` prints."""
    out = [f"crm status: {where}, as of {st.as_of:%Y-%m-%d %H:%M} {st.timezone} "
           f"(deliveries of the {days} business days before)", ""]
    by_feed: dict[str, list[dict]] = {}
    for d in st.deliveries:
        by_feed.setdefault(d["feed"], []).append(d)
    rows = []
    for feed, entries in by_feed.items():
        done = [e for e in entries if e["status"] == LOADED]
        problems = [f"{e['status']} {e['business_date']:%Y-%m-%d}"
                    + (f" ({e['hours_late']} h past {e['expected_by']:%m-%d %H:%M})" if e["hours_late"] else "")
                    + (f": {e['detail']}" if e["detail"] else "")
                    for e in entries if e["status"] not in (LOADED, DUE)]
        redelivered = sum(1 for e in done if e["deliveries"] > 1)
        latest = max((e["business_date"] for e in done), default=None)
        rows.append([feed, f"{len(done)}/{len(entries)}", latest,
                     sum(e["rows_loaded"] or 0 for e in done), sum(e["rows_quarantined"] or 0 for e in done),
                     sum(e["rows_duplicate"] or 0 for e in done), redelivered or None,
                     "; ".join(problems) or "ok"])
    out += ["Deliveries (bill: one row per billed month)"]
    out += _table(["feed", "loaded", "latest", "records", "quarantined", "duplicates", "re-delivered", "state"],
                  rows, right={3, 4, 5, 6})
    out += ["", "Months"]
    out += _table(["month", "state", "published", "rows", "waiting for"],
                  [[f"{m['month']:%Y-%m}", m["status"],
                    m["published_at"] and f"{m['published_at']:%Y-%m-%d %H:%M}",
                    m["published_rows"], m["waiting_for"]] for m in st.months], right={3})
    out += ["", f"Last {len(st.runs)} runs"]
    out += _table(["started", "seconds", "state", "dag", "tasks", "loaded", "quarantined", "failure"],
                  [[r["started_at"] and f"{r['started_at']:%Y-%m-%d %H:%M}", r.get("seconds"), r["status"], r["dag_id"],
                    r["tasks"], r["rows_loaded"], r["rows_quarantined"], (r["failure"] or "")[:120] or None]
                   for r in st.runs], right={1, 5, 6})
    out += ["", "Failed data-quality checks" + ("" if st.checks else ": none")]
    if st.checks:
        out += _table(["business date", "table", "check", "unexpected", "severity", "validated", "run"],
                      [[c["business_date"], c["table_name"], c["check_name"], c["unexpected_count"], c["severity"],
                        f"{c['validated_at']:%Y-%m-%d %H:%M}", c["run_id"]] for c in st.checks[:20]], right={3})
    out += ["", "Quarantined records" + ("" if st.quarantine else ": none")]
    if st.quarantine:
        out += _table(["feed", "reason", "records", "first"],
                      [[q["feed"], q["reason"], q["records"], q["example"]] for q in st.quarantine], right={2})
    return "\n".join(out)
