"""Independent recomputation of the published `crm` tables from a landing zone.

A test oracle for the integration tests. It reads the BOSS export files itself (control files,
size / md5 / gzip / row-count checks, declared encodings, CRLF), applies the record rules of
docs/ingest.md and computes every column as docs/metrics.md and docs/value.md define it. It
shares no code with the pipeline: the feed field lists below are written out from the input
contract (boss-exports.md), the parameters are read from config/analytics.json as plain JSON, and
only the standard library, pandas and numpy are used.

    ref = recompute(Path("landing"), hmac_key="secret")
    ref.complete_months, ref.subscriber_month, ref.kpi_month, ref.segment_summary,
    ref.segment_migration, ref.revenue_concentration, ref.revenue_lorenz, ref.key_account_month

`clv_fen` depends on the sBG parameters the pipeline fits; `clv_given_model` values the
subscriber-months given published parameters.

Dates inside this module are `int`s `YYYYMMDD` (months `YYYYMM`), which sort and compare like
the dates they stand for; the published frames use `datetime.date`.
"""

from __future__ import annotations

import calendar
import functools
import gzip
import hashlib
import hmac
import json
import math
import re
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# The input contract, written out (boss-exports.md, "Feeds"; field order = column order)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "str"  # str | msisdn | int | date | timestamp | month | code
    nullable: bool = False
    codes: tuple[str, ...] = ()  # kind "code": the allowed values
    min: int | None = None  # kind "int": inclusive range
    max: int | None = None


def _code(name: str, *codes: str, nullable: bool = False) -> Field:
    return Field(name, "code", nullable, codes)


DIRECTION = ("MO", "MT")
OPERATORS = ("ON_NET", "CMCC", "CUCC", "CTCC", "FIXED", "INTL")
GENERATIONS = ("2G", "3G", "4G", "5G")
STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
ACTIVE_STATUSES = ("ACTIVE", "SUSPENDED")

FIELDS: dict[str, list[Field]] = {
    "plan": [
        Field("plan_id"),
        Field("plan_name"),
        _code("payment_type", "PREPAID", "POSTPAID"),
        Field("monthly_fee_fen", "int"),
        Field("included_voice_min", "int"),
        Field("included_sms", "int"),
        Field("included_data_mb", "int"),
        _code("network_gen", *GENERATIONS),
    ],
    "subscriber": [
        Field("subscriber_id"),
        Field("msisdn", "msisdn"),
        Field("customer_id"),
        Field("account_id"),
        Field("group_id", nullable=True),
        Field("customer_name"),
        Field("id_number", nullable=True),
        _code("gender", "M", "F", nullable=True),
        Field("birth_year", "int", nullable=True),
        Field("city_code"),
        Field("brand"),
        Field("plan_id"),
        _code("payment_type", "PREPAID", "POSTPAID"),
        _code("network_gen", *GENERATIONS),
        Field("activation_date", "date"),
        _code("status", *STATUSES),
        Field("status_date", "date"),
        _code("terminate_reason", "VOLUNTARY", "NON_PAYMENT", "PORT_OUT", "OTHER", nullable=True),
        Field("channel"),
    ],
    "cdr_voice": [
        Field("cdr_id"),
        Field("msisdn", "msisdn"),
        Field("other_party"),
        _code("direction", *DIRECTION),
        Field("start_time", "timestamp"),
        Field("duration_sec", "int", min=0),
        _code("call_scope", "LOCAL", "LONG_DISTANCE", "ROAMING", "INTERNATIONAL"),
        _code("other_operator", *OPERATORS),
        Field("cell_id"),
        Field("charge_fen", "int"),
    ],
    "cdr_sms": [
        Field("cdr_id"),
        Field("msisdn", "msisdn"),
        Field("other_party"),
        _code("direction", *DIRECTION),
        Field("event_time", "timestamp"),
        _code("sms_type", "P2P", "A2P", "MMS"),
        _code("other_operator", *OPERATORS),
        Field("charge_fen", "int"),
    ],
    "cdr_data": [
        Field("cdr_id"),
        Field("msisdn", "msisdn"),
        Field("start_time", "timestamp"),
        Field("duration_sec", "int", min=0),
        Field("uplink_bytes", "int", min=0),
        Field("downlink_bytes", "int", min=0),
        _code("rat", *GENERATIONS),
        Field("apn"),
        Field("cell_id"),
        Field("charge_fen", "int"),
    ],
    "recharge": [
        Field("txn_id"),
        Field("account_id"),
        Field("msisdn", "msisdn"),
        Field("txn_time", "timestamp"),
        _code("txn_type", "RECHARGE", "BILL_PAYMENT", "REFUND"),
        Field("amount_fen", "int"),
        Field("channel"),  # typed "string" in the contract; its values are listed as examples
    ],
    "bill": [
        Field("bill_line_id"),
        Field("account_id"),
        Field("subscriber_id"),
        Field("bill_month", "month"),
        _code("item_code", "MONTHLY_FEE", "VOICE", "SMS", "DATA", "VAS", "ROAMING", "DISCOUNT", "ADJUSTMENT"),
        Field("amount_fen", "int"),
        Field("due_date", "date"),
        Field("paid_date", "date", nullable=True),
    ],
    "ticket": [
        Field("ticket_id"),
        Field("msisdn", "msisdn"),
        Field("created_time", "timestamp"),
        _code("channel", "HOTLINE", "STORE", "ONLINE", "REGULATOR"),
        _code("category", "BILLING", "NETWORK", "SERVICE", "VAS", "OTHER"),
        _code("is_complaint", "0", "1"),
        Field("resolved_time", "timestamp", nullable=True),
        Field("satisfaction", "int", nullable=True, min=1, max=5),
    ],
}

# Feeds that must deliver every day for a month to be complete (all but bill and survey).
DAILY_FEEDS = ("subscriber", "plan", "cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket")
# Msisdn-keyed feeds used by the metrics: record key and event time.
EVENT_FEEDS = {
    "cdr_voice": ("cdr_id", "start_time"),
    "cdr_sms": ("cdr_id", "event_time"),
    "cdr_data": ("cdr_id", "start_time"),
    "recharge": ("txn_id", "txn_time"),
    "ticket": ("ticket_id", "created_time"),
}
LATE_DAYS = 3  # events may arrive up to 3 days late; months need the first 3 days of M+1
CODECS = {"UTF-8": "utf-8", "GBK": "gbk"}

KPI_DIMENSIONS = ("ALL", "city_code", "brand", "payment_type", "plan_id", "value_segment", "network_gen")
SEGMENTS = ("VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE")
# docs/value.md: the component scores and indices of the customer value appraisal
VALUE_COLUMNS = [
    "margin_fen", "margin_3m_fen", "cv_revenue", "cv_margin", "cv_payment", "pv_revenue_growth",
    "pv_data_growth", "pv_tenure", "pv_data_adoption", "pv_network", "pv_life_stage",
    "pv_calling_circle", "pv_on_net_share", "current_value_index", "potential_value_index",
    "value_segment",
]
SUBSCRIBER_MONTH_COLUMNS = [
    "month", "subscriber_id", "msisdn_key", "customer_id", "group_id", "city_code", "brand",
    "plan_id", "payment_type", "network_gen", "tenure_months", "status_at_month_end",
    "revenue_fen", "arpu_3m_fen", "voice_mou", "sms_count", "data_mb", "recharge_fen",
    "complaint_count", "churned_in_month", "opening", "closing", "gross_add", *VALUE_COLUMNS,
]
SEGMENT_SUMMARY_COLUMNS = [
    "month", "value_segment", "subscribers", "revenue_fen", "revenue_share", "arpu_fen",
    "recommended_strategy", "avg_current_value_index", "avg_potential_value_index", "revenue_growth",
]
SEGMENT_MIGRATION_COLUMNS = ["month", "from_segment", "to_segment", "subscribers", "revenue_fen"]
REVENUE_CONCENTRATION_COLUMNS = ["month", "top20_revenue_share", "gini", "subscribers"]
REVENUE_LORENZ_COLUMNS = ["month", "point", "population_share", "revenue_share"]
KEY_ACCOUNT_COLUMNS = [
    "month", "group_id", "lines", "active_lines", "revenue_fen", "revenue_share", "revenue_change_3m",
    "churned_lines", "complaint_count", "health_score", "churn_penalty", "decline_penalty",
    "complaint_penalty",
]
MIB = 1048576
# the versioned parameters, read as plain JSON (repository root = two levels above this folder)
CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "analytics.json"
KPI_COLUMNS = [
    "month", "dimension", "dimension_value", "active_subscribers", "opening_subscribers",
    "closing_subscribers", "gross_adds", "churned_subscribers", "churn_rate", "revenue_fen",
    "arpu_fen", "voice_mou_per_sub", "data_mb_per_sub",
]


@dataclass
class Reference:
    """What `recompute` returns.

    complete_months: first days of the complete months, ascending.
    subscriber_month: SUBSCRIBER_MONTH_COLUMNS, one row per subscriber active in a complete month;
        month is a `datetime.date`, group_id / status_at_month_end may be None; the value columns
        (VALUE_COLUMNS) as docs/value.md defines them, clv_fen excepted (see `clv_given_model`).
    kpi_month: KPI_COLUMNS, one row per month, dimension (KPI_DIMENSIONS) and value present in
        that month; NULL churn_rate / arpu_fen are NaN.
    segment_summary: SEGMENT_SUMMARY_COLUMNS, one row per month and segment (all four always).
    segment_migration: SEGMENT_MIGRATION_COLUMNS, one row per month and (from, to) pair that
        occurs.
    revenue_concentration: REVENUE_CONCENTRATION_COLUMNS, one row per month.
    revenue_lorenz: REVENUE_LORENZ_COLUMNS, 101 rows (point 0..100) per month.
    key_account_month: KEY_ACCOUNT_COLUMNS, one row per month and group_id.
    lost_customers: LOST_CUSTOMER_COLUMNS, one row per subscription terminated in a complete month
        (docs/churn.md "Lost customers").
    NULL doubles are NaN everywhere.
    """

    complete_months: list[date]
    subscriber_month: pd.DataFrame
    kpi_month: pd.DataFrame
    segment_summary: pd.DataFrame
    segment_migration: pd.DataFrame
    revenue_concentration: pd.DataFrame
    revenue_lorenz: pd.DataFrame
    key_account_month: pd.DataFrame
    lost_customers: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Small date helpers (int YYYYMMDD / YYYYMM)
# --------------------------------------------------------------------------------------------


def ymd(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def from_ymd(v: int) -> date:
    return date(v // 10000, v // 100 % 100, v % 100)


def month_days(month: int) -> list[date]:
    year, mon = divmod(month, 100)
    return [date(year, mon, day) for day in range(1, calendar.monthrange(year, mon)[1] + 1)]


def add_months(month: int, n: int) -> int:
    index = (month // 100) * 12 + (month % 100 - 1) + n
    return (index // 12) * 100 + index % 12 + 1


def month_start(month: int) -> date:
    return date(month // 100, month % 100, 1)


def month_end(month: int) -> int:
    """The last day of a month, as int YYYYMMDD."""
    return month * 100 + calendar.monthrange(month // 100, month % 100)[1]


def month_of(values) -> pd.Series:
    """int YYYYMM of each month value (`date`, `datetime`, `Timestamp` or ISO text)."""
    stamps = pd.to_datetime(pd.Series(values).astype(str).str[:10])
    return stamps.dt.year * 100 + stamps.dt.month


def load_config(path: Path | None = None) -> dict:
    """The analytics parameters (config/analytics.json) as a plain dict."""
    return json.loads(Path(path or CONFIG_PATH).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# 1. Deliveries: discovery and verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlEntry:
    name: str
    rows: int
    size: int
    md5: str
    encoding: str


@dataclass(frozen=True)
class Delivery:
    feed: str
    business_date: date
    folder: Path
    entries: tuple[ControlEntry, ...]
    problem: str | None  # None when every check passed

    @property
    def valid(self) -> bool:
        return self.problem is None


_CONTROL_LINE = re.compile(r"([^|/\\]+)\|([0-9]+)\|([0-9]+)\|([0-9a-fA-F]{32})\|(UTF-8|GBK)")


def parse_control(text: str) -> tuple[ControlEntry, ...]:
    """The control file's entries; ValueError when it is malformed (or lists no file)."""
    entries = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        m = _CONTROL_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"control_format: {line!r}")
        name, rows, size, md5, encoding = m.groups()
        entries.append(ControlEntry(name, int(rows), int(size), md5.lower(), encoding))
    if not entries:
        raise ValueError("control_format: no data file listed")
    return tuple(entries)


def _file_content(path: Path) -> bytes:
    """The data lines' bytes: the file itself, or its decompressed gzip stream."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def verify_file(folder: Path, entry: ControlEntry) -> str | None:
    """The first failed check of one listed data file, or None."""
    path = folder / entry.name
    if not path.is_file():
        return "file_missing"
    data = path.read_bytes()
    if len(data) != entry.size:
        return "byte_size"
    if hashlib.md5(data).hexdigest() != entry.md5:
        return "md5"
    if entry.name.endswith(".gz"):
        if not data:
            return "gzip_integrity"
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return "gzip_integrity"
    if sum(map(bool, map(bytes.strip, data.split(b"\n")))) != entry.rows:  # non-blank lines
        return "row_count"
    return None


def discover(landing: Path, feeds) -> dict[str, dict[date, Delivery]]:
    """Every delivery with a control file, per feed and business date, verified."""
    found: dict[str, dict[date, Delivery]] = {}
    for feed in feeds:
        found[feed] = {}
        feed_dir = landing / feed
        if not feed_dir.is_dir():
            continue
        for folder in sorted(feed_dir.iterdir()):
            if not (folder.is_dir() and re.fullmatch(r"[0-9]{8}", folder.name)):
                continue
            try:
                day = from_ymd(int(folder.name))
            except ValueError:
                continue
            control = folder / f"{feed.upper()}_{folder.name}.ctl"
            if not control.is_file():
                continue  # still being written: not a delivery yet
            problem = None
            entries: tuple[ControlEntry, ...] = ()
            try:
                entries = parse_control(control.read_bytes().decode("utf-8"))
            except ValueError as exc:  # UnicodeDecodeError included
                problem = f"{control.name}: {exc}"
            for entry in entries:
                check = verify_file(folder, entry)
                if check is not None:
                    problem = f"{entry.name}: check {check}"
                    break
            found[feed][day] = Delivery(feed, day, folder, entries, problem)
    return found


# --------------------------------------------------------------------------------------------
# 2. Records: read, split, type and validate
# --------------------------------------------------------------------------------------------


def _field_pattern(f: Field) -> str:
    """The text shape of one field, as one capturing group (None when an optional field is empty).

    The shape settles the syntactic rules: a required value is present, an msisdn is 11 digits
    after an optional +86/86 prefix (the group holds the 11 digits), integers are decimal,
    dates / timestamps / months are digit strings of their length, codes are in their list.
    The semantic rules (real calendar values, ranges, 64-bit integers) follow in `type_records`.
    """
    if f.kind == "msisdn":
        return r"(?:\+?86)?([0-9]{11})" + ("?" if f.nullable else "")
    body = {
        "str": r"[^|]+",
        "int": r"-?[0-9]+",
        "date": r"[0-9]{8}",
        "timestamp": r"[0-9]{14}",
        "month": r"[0-9]{6}",
        "code": "|".join(re.escape(c) for c in f.codes),
    }[f.kind]
    return f"((?:{body}))" + ("?" if f.nullable else "")


def line_pattern(fields: list[Field]) -> re.Pattern:
    """A whole data line: the fields' shapes joined by `|` (so a wrong field count never matches)."""
    return re.compile(r"\|".join(_field_pattern(f) for f in fields))


_LINE_PATTERNS = {feed: line_pattern(fields) for feed, fields in FIELDS.items()}


def read_records(delivery: Delivery) -> pd.DataFrame:
    """The records of a valid delivery whose fields have the right shape, as string columns.

    Blank lines are no records. A line that does not decode in the declared encoding, has the
    wrong number of fields or a malformed field is bad and left out. NULL fields are None.
    `_order` ranks versions of a record: business date, then file name, then line number.
    """
    fields = FIELDS[delivery.feed]
    pattern = _LINE_PATTERNS[delivery.feed]
    rows: list[tuple] = []
    orders: list[int] = []
    base = ymd(delivery.business_date) * 10**11
    for file_index, entry in enumerate(sorted(delivery.entries, key=lambda e: e.name)):
        codec = CODECS[entry.encoding]
        content = _file_content(delivery.folder / entry.name)
        for line_no, raw in enumerate(content.split(b"\n"), start=1):
            if not raw.strip():
                continue  # blank: not a record
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                continue  # bad encoding
            match = pattern.fullmatch(text)
            if match is None:
                continue  # field count, missing value, malformed number / time / msisdn, bad code
            rows.append(match.groups())
            orders.append(base + file_index * 10**8 + line_no)
    columns = list(zip(*rows)) if rows else [()] * len(fields)
    frame = pd.DataFrame({f.name: np.array(col, dtype=object) for f, col in zip(fields, columns)})
    frame["_order"] = np.array(orders, dtype=np.int64)
    return frame


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _to_int64(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(values, ok, present) for decimal strings or None; ok is False for None and for values
    beyond 64 bits."""
    present = s.notna()
    values = pd.Series(0, index=s.index, dtype=np.int64)
    text = s[present]
    try:
        values.loc[text.index] = text.astype(np.int64)
        return values, present.copy(), present
    except OverflowError:  # some value beyond 64 bits: check each one exactly
        exact = text.map(int)
    fits = exact.map(lambda v: _INT64_MIN <= v <= _INT64_MAX).astype(bool)
    ok = present.copy()
    ok.loc[fits.index[~fits]] = False
    values.loc[fits.index[fits]] = exact[fits].astype(np.int64)
    return values, ok, present


def _real_days(days: pd.Series) -> pd.Series:
    """Whether each int YYYYMMDD names a real calendar day."""

    def real(v: int) -> bool:
        try:
            from_ymd(int(v))
        except ValueError:
            return False
        return True

    verdict = {v: real(v) for v in pd.unique(days)}
    return days.map(verdict).astype(bool)


def type_records(raw: pd.DataFrame, fields: list[Field]) -> tuple[pd.DataFrame, pd.Series]:
    """Typed columns of well-shaped records, and the mask of those passing the semantic rules.

    Integers must fit in 64 bits and respect their range; dates and timestamps must be real
    calendar days and clock times; months 01-12. Dates and timestamps come out as their day
    (int YYYYMMDD), months as int YYYYMM; NULL dates as 0, NULL strings as None, NULL integers
    as <NA> (nullable Int64 columns).
    """
    columns: dict[str, pd.Series] = {}
    good = pd.Series(True, index=raw.index)
    for f in fields:
        s = raw[f.name]
        if f.kind in ("str", "code", "msisdn"):
            columns[f.name] = s
            continue
        values, ok, present = _to_int64(s)
        if f.kind == "int":
            if f.min is not None:
                ok &= values >= f.min
            if f.max is not None:
                ok &= values <= f.max
        elif f.kind == "date":
            ok &= _real_days(values)
        elif f.kind == "timestamp":
            clock = values % 1_000_000
            values = values // 1_000_000
            ok &= (clock // 10_000 < 24) & (clock // 100 % 100 < 60) & (clock % 100 < 60)
            ok &= _real_days(values.where(ok, 19700101))
        elif f.kind == "month":
            ok &= (values % 100 >= 1) & (values % 100 <= 12) & (values // 100 >= 1)
        good &= ~present | ok
        columns[f.name] = values.where(ok, 0)
        if f.kind == "int" and f.nullable:
            columns[f.name] = columns[f.name].astype("Int64").mask(~present)
    columns["_order"] = raw["_order"]
    return pd.DataFrame(columns, index=raw.index), good.astype(bool)


def load_feed(delivery: Delivery) -> pd.DataFrame:
    """The good records of one delivery: field rules plus the feed's window rule."""
    raw = read_records(delivery)
    if raw.empty:
        return raw
    typed, good = type_records(raw, FIELDS[delivery.feed])
    day = ymd(delivery.business_date)
    window_start = ymd(delivery.business_date - timedelta(days=LATE_DAYS))
    if delivery.feed == "subscriber":  # a snapshot may not describe the future
        good &= (typed["activation_date"] <= day) & (typed["status_date"] <= day)
    elif delivery.feed == "bill":  # a bill may not bill a month after its bill run
        good &= typed["bill_month"] * 100 + 1 <= day
    elif delivery.feed == "ticket":  # the window applies to the ticket's last change
        last_change = typed["resolved_time"].where(typed["resolved_time"] != 0, typed["created_time"])
        good &= (last_change >= window_start) & (last_change <= day)
    elif delivery.feed in EVENT_FEEDS:  # event time in [D - 3 days, D + 1 day)
        event = typed[EVENT_FEEDS[delivery.feed][1]]
        good &= (event >= window_start) & (event <= day)
    return typed[good]


# --------------------------------------------------------------------------------------------
# 3. Subscriber snapshots and number -> subscription mapping
# --------------------------------------------------------------------------------------------

SNAPSHOT_COLUMNS = [
    "subscriber_id", "msisdn", "customer_id", "account_id", "group_id", "birth_year", "city_code",
    "brand", "plan_id", "payment_type", "network_gen", "activation_date", "status", "status_date",
    "terminate_reason",
]


def load_snapshots(deliveries: dict[date, Delivery]) -> pd.DataFrame:
    """All valid snapshot rows with their `day`; within a day the last line per subscriber wins."""
    parts = []
    for day, delivery in sorted(deliveries.items()):
        if not delivery.valid:
            continue
        rows = load_feed(delivery).sort_values("_order", kind="stable")
        rows = rows.drop_duplicates("subscriber_id", keep="last")[SNAPSHOT_COLUMNS]
        parts.append(rows.assign(day=ymd(day)))
    if not parts:
        return pd.DataFrame(columns=["day", *SNAPSHOT_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def number_holders(snaps: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per snapshot day: msisdn -> the subscription holding it that day.

    The ACTIVE/SUSPENDED holder, else one TERMINATED that very day; between two eligible holders
    the active one, then the later activation_date, then the larger subscriber_id.
    """
    active = snaps["status"].isin(ACTIVE_STATUSES)
    ended_today = (snaps["status"] == "TERMINATED") & (snaps["status_date"] == snaps["day"])
    holders = snaps[active | ended_today].assign(_active=active)
    holders = holders.sort_values(["day", "msisdn", "_active", "activation_date", "subscriber_id"])
    holders = holders.drop_duplicates(["day", "msisdn"], keep="last")
    return {day: g[["day", "msisdn", "subscriber_id"]] for day, g in holders.groupby("day")}


# --------------------------------------------------------------------------------------------
# 4. Event feeds: map, deduplicate, aggregate per subscriber and month
# --------------------------------------------------------------------------------------------


def _event_values(feed: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The one integer per record that the metrics need."""
    if feed == "cdr_voice":
        value = rows["duration_sec"]
    elif feed == "cdr_sms":
        value = pd.Series(1, index=rows.index, dtype=np.int64)
    elif feed == "cdr_data":
        value = rows["uplink_bytes"] + rows["downlink_bytes"]
    elif feed == "recharge":
        value = rows["amount_fen"].where(rows["txn_type"].isin(["RECHARGE", "REFUND"]), 0)
    else:  # ticket
        value = (rows["is_complaint"] == "1").astype(np.int64)
    return value


# Per feed, the fields besides the metric value that the value appraisal needs.
EVENT_EXTRAS = {
    "cdr_voice": ("other_party", "other_operator"),
    "recharge": ("txn_type", "account_id", "amount_fen"),
}


def load_event_records(
    feed: str,
    deliveries: dict[date, Delivery],
    snapshot_days: set[date],
    holders: dict[int, pd.DataFrame],
) -> pd.DataFrame:
    """The feed's surviving records: subscriber_id, event_day, month, value (and EVENT_EXTRAS).

    A delivery of day D counts only when the snapshot of D is loaded. Each record goes to the
    holder of its number on its event day (no holder: unknown subscriber, dropped); then per key
    the latest version wins.
    """
    key, event_field = EVENT_FEEDS[feed]
    extra = list(EVENT_EXTRAS.get(feed, ()))
    parts = []
    for day, delivery in sorted(deliveries.items()):
        if not delivery.valid or day not in snapshot_days:
            continue
        rows = load_feed(delivery)
        if rows.empty:
            continue
        # the snapshots of the records' event days (a ticket may be days older than its update)
        near = [holders[d] for d in pd.unique(rows[event_field]) if d in holders]
        if not near:
            continue
        compact = pd.DataFrame({
            "key": rows[key],
            "_order": rows["_order"],
            "msisdn": rows["msisdn"],
            "event_day": rows[event_field],
            "value": _event_values(feed, rows),
            **{c: rows[c] for c in extra},
        })
        mapped = compact.merge(
            pd.concat(near), left_on=["event_day", "msisdn"], right_on=["day", "msisdn"], how="inner"
        )
        parts.append(mapped[["key", "_order", "subscriber_id", "event_day", "value", *extra]])
    if not parts:
        return pd.DataFrame(columns=["subscriber_id", "event_day", "month", "value", *extra])
    records = pd.concat(parts, ignore_index=True)
    records = records.sort_values("_order", kind="stable").drop_duplicates("key", keep="last")
    records["month"] = records["event_day"] // 100
    return records.drop(columns=["key", "_order"]).reset_index(drop=True)


def monthly_sums(records: pd.DataFrame) -> dict[tuple[str, int], int]:
    """Per (subscriber_id, month): the summed metric value of the records."""
    sums = records.groupby(["subscriber_id", "month"])["value"].sum()
    return {(sid, int(m)): int(v) for (sid, m), v in sums.items()}


def recharge_counts(records: pd.DataFrame) -> dict[tuple[str, int], int]:
    """Per (subscriber_id, month): the number of RECHARGE transactions (prepaid regularity)."""
    counts = records[records["txn_type"] == "RECHARGE"].groupby(["subscriber_id", "month"]).size()
    return {(sid, int(m)): int(v) for (sid, m), v in counts.items()}


def bill_payments(records: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """Per account_id (the recharge record's own field): its BILL_PAYMENTs as (day, amount_fen)."""
    paid = records[records["txn_type"] == "BILL_PAYMENT"]
    sums = paid.groupby(["account_id", "event_day"])["amount_fen"].sum()
    out: dict[str, list[tuple[int, int]]] = {}
    for (account, day), amount in sums.items():
        out.setdefault(account, []).append((int(day), int(amount)))
    return out


_COUNTRY_PREFIX = re.compile(r"^(?:\+86|86)(?=[0-9]{11}$)")


def voice_contacts(records: pd.DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
    """Per (subscriber_id, month): (distinct other parties with at least one voice call, of
    which ON_NET).

    The other number is normalised as the contract says (a +86 / 86 prefix in front of 11 digits
    is not part of it; anything else stays as delivered). A party counts ON_NET when any of the
    month's calls with it says ON_NET (the largest operator code, as 'ON_NET' sorts last).
    """
    if records.empty:
        return {}
    party = records["other_party"].str.replace(_COUNTRY_PREFIX, "", regex=True)
    edges = pd.DataFrame({
        "subscriber_id": records["subscriber_id"],
        "month": records["month"],
        "party": party,
        "on_net": (records["other_operator"] == "ON_NET").astype(np.int64),
    })
    per_party = edges.groupby(["subscriber_id", "month", "party"], as_index=False)["on_net"].max()
    per_month = per_party.groupby(["subscriber_id", "month"])["on_net"].agg(["size", "sum"])
    return {(sid, int(m)): (int(n), int(on)) for (sid, m), (n, on) in per_month.iterrows()}


def load_bill_lines(deliveries: dict[date, Delivery]) -> pd.DataFrame:
    """The bill lines that count: each bill month entirely from the latest valid delivery holding
    (good) lines for it; within that delivery a repeated bill_line_id counts once (last line wins).
    Columns: account_id, subscriber_id, bill_month, amount_fen, due_date, paid_date (0 = NULL).
    """
    columns = ["bill_line_id", "_order", "account_id", "subscriber_id", "bill_month", "amount_fen",
               "due_date", "paid_date"]
    parts = []
    for day, delivery in sorted(deliveries.items()):
        if delivery.valid:
            rows = load_feed(delivery)
            if not rows.empty:
                parts.append(rows[columns].assign(business_date=ymd(day)))
    if not parts:
        return pd.DataFrame(columns=columns[2:])
    lines = pd.concat(parts, ignore_index=True)
    latest = lines.groupby("bill_month")["business_date"].transform("max")
    lines = lines[lines["business_date"] == latest]
    lines = lines.sort_values("_order", kind="stable").drop_duplicates("bill_line_id", keep="last")
    return lines[columns[2:]].reset_index(drop=True)


def revenue_by_subscriber(lines: pd.DataFrame) -> tuple[dict[tuple[str, int], int], set[int]]:
    """Revenue per (subscriber_id, month) and the months billed."""
    sums = lines.groupby(["subscriber_id", "bill_month"])["amount_fen"].sum()
    revenue = {(sid, int(month)): int(v) for (sid, month), v in sums.items()}
    return revenue, {int(m) for m in lines["bill_month"].unique()}


@dataclass(frozen=True)
class AccountBill:
    """One bill month of one account (docs/value.md, payment, postpaid)."""

    bill_month: int  # YYYYMM
    billed: int  # sum of the account's lines of the month, fen
    settled: int  # of which lines whose paid_date is set and <= due
    due: int  # the latest due_date of those lines, YYYYMMDD


def account_bills(lines: pd.DataFrame) -> dict[str, list[AccountBill]]:
    """Per account_id (the bill line's own field): its bills, by bill month."""
    if lines.empty:
        return {}
    due = lines.groupby(["account_id", "bill_month"])["due_date"].transform("max")
    settled = lines["amount_fen"].where((lines["paid_date"] != 0) & (lines["paid_date"] <= due), 0)
    frame = pd.DataFrame({"account_id": lines["account_id"], "bill_month": lines["bill_month"],
                          "amount": lines["amount_fen"], "settled": settled, "due": due})
    sums = frame.groupby(["account_id", "bill_month"]).agg(
        billed=("amount", "sum"), settled=("settled", "sum"), due=("due", "max"))
    out: dict[str, list[AccountBill]] = {}
    for (account, month), r in sums.iterrows():
        out.setdefault(account, []).append(AccountBill(int(month), int(r["billed"]), int(r["settled"]), int(r["due"])))
    return out


def plan_allowances(deliveries: dict[date, Delivery], days: list[int]) -> dict[int, dict[str, int]]:
    """Per day (int YYYYMMDD) of `days`: plan_id -> included_data_mb in that day's plan snapshot
    (within a day the last line per plan wins)."""
    out: dict[int, dict[str, int]] = {}
    for day in days:
        delivery = deliveries.get(from_ymd(day))
        if delivery is None or not delivery.valid:
            out[day] = {}
            continue
        rows = load_feed(delivery)
        if rows.empty:
            out[day] = {}
            continue
        rows = rows.sort_values("_order", kind="stable").drop_duplicates("plan_id", keep="last")
        out[day] = dict(zip(rows["plan_id"], rows["included_data_mb"].astype(int)))
    return out


# --------------------------------------------------------------------------------------------
# 5. Months, subscriber-months and KPIs (docs/metrics.md)
# --------------------------------------------------------------------------------------------


def complete_months(found: dict[str, dict[date, Delivery]], billed: set[int]) -> list[int]:
    """Billed months whose every day, and the first 3 days of the next month, every daily feed
    delivered validly."""
    months = []
    for month in sorted(billed):
        days = month_days(month)
        days += [days[-1] + timedelta(days=i) for i in range(1, LATE_DAYS + 1)]
        if all(
            day in found[feed] and found[feed][day].valid for feed in DAILY_FEEDS for day in days
        ):
            months.append(month)
    return months


def round_fraction(value: Fraction, places: int = 2) -> Fraction:
    """An exact value rounded to `places` decimals, ties away from zero, still exact."""
    value = Fraction(value)
    scaled = abs(value) * 10**places
    units = int(scaled + Fraction(1, 2))  # floor for non-negative values
    return Fraction(units if value >= 0 else -units, 10**places)


def round_half_up(value: Fraction | float, places: int = 2) -> float:
    """Round an exact value (or a double, taken exactly) to `places` decimals, ties away from zero."""
    return float(round_fraction(value, places))


def msisdn_key(msisdn: str, key: str) -> str:
    return hmac.new(key.encode("utf-8"), msisdn.encode("utf-8"), hashlib.sha256).hexdigest()


def _is_active(row) -> bool:
    return row is not None and row.status in ACTIVE_STATUSES


def _optional_int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


# subscriber-month columns the recomputation keeps for the value appraisal, not published
HIDDEN_COLUMNS = [
    "_voice_sec", "_data_bytes", "_account_id", "_birth_year", "_recharges", "_contacts",
    "_on_net_contacts", "_allowance_mb",
]
BASE_COLUMNS = [c for c in SUBSCRIBER_MONTH_COLUMNS if c not in VALUE_COLUMNS]


def subscriber_months(
    snaps: pd.DataFrame,
    snapshot_days: set[date],
    months: list[int],
    usage: dict[str, dict[tuple[str, int], int]],
    revenue: dict[tuple[str, int], int],
    hmac_key: str,
    recharges: dict[tuple[str, int], int] | None = None,
    contacts: dict[tuple[str, int], tuple[int, int]] | None = None,
    allowances: dict[int, dict[str, int]] | None = None,
) -> pd.DataFrame:
    """The docs/metrics.md columns (BASE_COLUMNS) plus HIDDEN_COLUMNS, one row per subscriber
    active in a month of `months`."""
    recharges, contacts, allowances = recharges or {}, contacts or {}, allowances or {}
    rows = []
    for month in months:
        days = [ymd(d) for d in month_days(month)]
        first, last = days[0], days[-1]
        prev_last = ymd(month_start(month) - timedelta(days=1))
        has_prev = from_ymd(prev_last) in snapshot_days
        window = snaps[snaps["day"].isin([prev_last, *days])]
        snap = {day: {} for day in [prev_last, *days]}
        for r in window.itertuples(index=False):
            snap[r.day][r.subscriber_id] = r
        # activation_date as in the subscriber's latest snapshot row up to last(M)
        upto = snaps[snaps["day"] <= last].sort_values("day", kind="stable")
        upto = upto.drop_duplicates("subscriber_id", keep="last")
        latest_activation = dict(zip(upto["subscriber_id"], upto["activation_date"].astype(int)))
        plans = allowances.get(last, {})

        candidates = set(snap[prev_last] if has_prev else snap[first])
        candidates |= {sid for sid, act in latest_activation.items() if act // 100 == month}
        for sid in sorted(candidates):
            if has_prev:
                opening = _is_active(snap[prev_last].get(sid))
            else:
                r = snap[first].get(sid)
                opening = _is_active(r) and r.activation_date < first
            gross_add = sid in latest_activation and latest_activation[sid] // 100 == month
            if not (opening or gross_add):
                continue
            end = snap[last].get(sid)
            closing = _is_active(end)
            churned = end is not None and end.status == "TERMINATED" and end.status_date // 100 == month
            attr_day = next((d for d in reversed([prev_last, *days]) if _is_active(snap[d].get(sid))), None)
            if attr_day is None:
                attr_day = next(d for d in reversed(days) if sid in snap[d])
            a = snap[attr_day][sid]
            act = a.activation_date
            key = (sid, month)
            n_contacts, n_on_net = contacts.get(key, (0, 0))
            rows.append({
                "month": month_start(month),
                "subscriber_id": sid,
                "msisdn_key": msisdn_key(a.msisdn, hmac_key),
                "customer_id": a.customer_id,
                "group_id": a.group_id,
                "city_code": a.city_code,
                "brand": a.brand,
                "plan_id": a.plan_id,
                "payment_type": a.payment_type,
                "network_gen": a.network_gen,
                "tenure_months": 12 * (month // 100 - act // 10000) + month % 100 - act // 100 % 100,
                "status_at_month_end": end.status if end is not None else None,
                "revenue_fen": revenue.get(key, 0),
                "_voice_sec": usage["cdr_voice"].get(key, 0),
                "sms_count": usage["cdr_sms"].get(key, 0),
                "_data_bytes": usage["cdr_data"].get(key, 0),
                "recharge_fen": usage["recharge"].get(key, 0),
                "complaint_count": usage["ticket"].get(key, 0),
                "churned_in_month": churned,
                "opening": opening,
                "closing": closing,
                "gross_add": gross_add,
                "_account_id": a.account_id,
                "_birth_year": _optional_int(a.birth_year),
                "_recharges": recharges.get(key, 0),
                "_contacts": n_contacts,
                "_on_net_contacts": n_on_net,
                "_allowance_mb": plans.get(a.plan_id),
            })

    # arpu_3m: mean revenue over the subscriber's rows in M, M-1, M-2 (only months with a row)
    has_row = {(r["subscriber_id"], ymd(r["month"]) // 100): r["revenue_fen"] for r in rows}
    for r in rows:
        month = ymd(r["month"]) // 100
        window = [has_row[(r["subscriber_id"], add_months(month, -k))] for k in range(3)
                  if (r["subscriber_id"], add_months(month, -k)) in has_row]
        r["arpu_3m_fen"] = round_half_up(Fraction(sum(window), len(window)))
        r["voice_mou"] = r["_voice_sec"] / 60
        r["data_mb"] = r["_data_bytes"] / MIB

    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, *HIDDEN_COLUMNS])
    for col in ("tenure_months", "revenue_fen", "sms_count", "recharge_fen", "complaint_count",
                "_voice_sec", "_data_bytes", "_recharges", "_contacts", "_on_net_contacts"):
        frame[col] = frame[col].astype(np.int64)
    for col in ("arpu_3m_fen", "voice_mou", "data_mb"):
        frame[col] = frame[col].astype(np.float64)
    for col in ("churned_in_month", "opening", "closing", "gross_add"):
        frame[col] = frame[col].astype(bool)
    for col in ("_birth_year", "_allowance_mb"):
        frame[col] = pd.Series([None if pd.isna(v) else int(v) for v in frame[col]], index=frame.index, dtype=object)
    return frame.sort_values(["month", "subscriber_id"], ignore_index=True)


# --------------------------------------------------------------------------------------------
# 6. Customer value appraisal (docs/value.md)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _exact(x) -> Fraction:
    """A config number as the decimal it is written as (0.3 is 3/10, not the nearest double)."""
    return Fraction(str(x))


def _mean(values: list) -> Fraction | None:
    return Fraction(sum(values), len(values)) if values else None


def logscore(x, reference, full) -> float:
    """100 x min(1, ln(1 + max(x, 0) / r) / ln(1 + f / r))."""
    x = max(Fraction(x), 0)
    return 100 * min(1.0, math.log1p(x / _exact(reference)) / math.log1p(_exact(full) / _exact(reference)))


def growth(now, prior, smoothing, full_ratio, neutral) -> float:
    """50 + 50 x clip(ln((max(now, 0) + k) / (max(prior, 0) + k)) / ln R, -1, 1); `neutral`
    without a prior (prior None)."""
    if prior is None:
        return float(neutral)
    k = _exact(smoothing)
    ratio = (max(Fraction(now), 0) + k) / (max(Fraction(prior), 0) + k)
    return 50 + 50 * min(1.0, max(-1.0, math.log(ratio) / math.log(full_ratio)))


def postpaid_payment(bills: list[AccountBill], payments: list[tuple[int, int]], month: int, params: dict) -> float:
    """The payment score of an account in `month` (YYYYMM), docs/value.md "Payment, postpaid".

    bills: the account's bills; payments: its BILL_PAYMENTs as (day YYYYMMDD, amount_fen).
    The window holds the bills due from the first day of M-2 to the last day of M; payments
    count from the first day of the month after the window's earliest bill month and settle the
    oldest bill first.
    """
    first, last = add_months(month, -2) * 100 + 1, month_end(month)
    window = sorted((b for b in bills if first <= b.due <= last), key=lambda b: b.bill_month)
    if not window:
        return float(params["neutral"])
    since = add_months(window[0].bill_month, 1) * 100 + 1

    def paid_by(day: int) -> int:
        return sum(amount for d, amount in payments if since <= d <= day)

    owed = on_time = 0
    for b in window:
        outstanding = max(0, b.billed - b.settled)
        owed += outstanding
        if outstanding == 0 or paid_by(b.due) >= owed:
            on_time += 1
    arrears = max(0, owed - paid_by(last))
    share = min(1, Fraction(arrears) / _exact(params["arrears_reference_fen"]))
    penalty = _exact(params["arrears_max_penalty"]) * share
    return float(min(100, max(0, 100 * Fraction(on_time, len(window)) - penalty)))


def prepaid_payment(rows_with_recharge: int, rows: int) -> float:
    """Recharge regularity: 100 x rows of M-2..M with a RECHARGE / rows of M-2..M."""
    return float(100 * Fraction(rows_with_recharge, rows))


def data_adoption(data_bytes: int, allowance_mb: int | None, default_mb) -> float:
    """100 x min(1, data_mb / allowance); the default allowance when the plan is unknown or has
    no data allowance (0 MB; the contract does not forbid a negative one, which counts as none)."""
    allowance = _exact(default_mb) if allowance_mb is None or allowance_mb <= 0 else Fraction(allowance_mb)
    return float(100 * min(1, Fraction(data_bytes, MIB) / allowance))


def life_stage(year: int, birth_year: int | None, params: dict) -> float:
    """The band score of age = year - birth_year; neutral when the birth year is unknown (or the
    age falls in no band)."""
    if birth_year is not None:
        age = year - birth_year
        for low, high, score in params["bands"]:
            if low <= age <= high:
                return float(score)
    return float(params["neutral"])


def weighted_index(scores: dict[str, float], weights: dict[str, float]) -> float:
    """round(sum w_i s_i / sum w_i, 2), exact over the (double) scores and the decimal weights."""
    total = sum(_exact(w) for w in weights.values())
    return round_half_up(sum(_exact(w) * Fraction(scores[name]) for name, w in weights.items()) / total)


def segment_of(current: float, potential: float, params: dict) -> str:
    high_current = current >= params["high_current_from"]
    high_potential = potential >= params["high_potential_from"]
    if high_current:
        return "VALUABLE" if high_potential else "SUB_VALUABLE"
    return "POTENTIAL" if high_potential else "LOW_VALUE"


def _months(values) -> list[int]:
    """int YYYYMM of each month value (a `date`, `datetime` or `Timestamp`)."""
    return [m.year * 100 + m.month for m in values]


def _history(sm: pd.DataFrame):
    """(keys, back): keys[i] = (subscriber_id, month) of row i; back(i, ks) = the rows of the same
    subscriber k months before, for k in ks, that exist."""
    keys = list(zip(sm["subscriber_id"], _months(sm["month"])))
    index = {k: i for i, k in enumerate(keys)}

    def back(i: int, ks) -> list[int]:
        sid, month = keys[i]
        found = (index.get((sid, add_months(month, -k))) for k in ks)
        return [j for j in found if j is not None]

    return keys, back


def value_columns(
    sm: pd.DataFrame,
    bills: dict[str, list[AccountBill]],
    payments: dict[str, list[tuple[int, int]]],
    config: dict,
) -> pd.DataFrame:
    """`sm` (BASE_COLUMNS + HIDDEN_COLUMNS of `subscriber_months`) with VALUE_COLUMNS added."""
    vs = config["value_segments"]
    cost, pay, grow = vs["cost_to_serve"], vs["payment"], vs["growth"]
    keys, back = _history(sm)
    revenue = sm["revenue_fen"].tolist()
    data = [Fraction(b, MIB) for b in sm["_data_bytes"]]
    per_line, per_min = _exact(cost["per_line_fen"]), _exact(cost["per_voice_min_fen"])
    per_sms, per_mb = _exact(cost["per_sms_fen"]), _exact(cost["per_data_mb_fen"])
    margins = [
        round_fraction(rev - (per_line + per_min * Fraction(int(sec), 60) + per_sms * int(sms) + per_mb * mb))
        for rev, sec, sms, mb in zip(revenue, sm["_voice_sec"], sm["sms_count"], data)
    ]
    recharged = [n > 0 for n in sm["_recharges"]]
    account_scores: dict[tuple[str, int], float] = {}
    out: dict[str, list] = {c: [] for c in VALUE_COLUMNS}
    for i, r in enumerate(sm.to_dict("records")):
        month = keys[i][1]
        last3, prior = back(i, (0, 1, 2)), back(i, (1, 2, 3))
        margin_3m = round_fraction(_mean([margins[j] for j in last3]))
        if r["payment_type"] == "POSTPAID":
            key = (r["_account_id"], month)
            if key not in account_scores:
                account_scores[key] = postpaid_payment(
                    bills.get(r["_account_id"], []), payments.get(r["_account_id"], []), month, pay)
            payment = account_scores[key]
        else:
            payment = prepaid_payment(sum(recharged[j] for j in last3), len(last3))
        current = {
            "revenue": logscore(Fraction(r["arpu_3m_fen"]), vs["revenue"]["reference_fen"], vs["revenue"]["full_fen"]),
            "margin": logscore(margin_3m, vs["margin"]["reference_fen"], vs["margin"]["full_fen"]),
            "payment": payment,
        }
        circle = vs["calling_circle"]
        potential = {
            "revenue_growth": growth(revenue[i], _mean([revenue[j] for j in prior]), grow["revenue_smoothing_fen"],
                                     grow["full_ratio"], grow["neutral"]),
            "data_growth": growth(data[i], _mean([data[j] for j in prior]), grow["data_smoothing_mb"],
                                  grow["full_ratio"], grow["neutral"]),
            "tenure": logscore(r["tenure_months"], vs["tenure"]["reference_months"], vs["tenure"]["full_months"]),
            "data_adoption": data_adoption(r["_data_bytes"], r["_allowance_mb"],
                                           vs["data_adoption"]["reference_mb_without_allowance"]),
            "network": float(vs["network"][r["network_gen"]]),
            "life_stage": life_stage(month // 100, r["_birth_year"], vs["life_stage"]),
            "calling_circle": logscore(r["_contacts"], circle["reference_contacts"], circle["full_contacts"]),
            "on_net_share": float(100 * Fraction(r["_on_net_contacts"], r["_contacts"])) if r["_contacts"] else 0.0,
        }
        cvi = weighted_index(current, vs["current_value_weights"])
        pvi = weighted_index(potential, vs["potential_value_weights"])
        out["margin_fen"].append(float(margins[i]))
        out["margin_3m_fen"].append(float(margin_3m))
        for name, score in current.items():
            out[f"cv_{name}"].append(score)
        for name, score in potential.items():
            out[f"pv_{name}"].append(score)
        out["current_value_index"].append(cvi)
        out["potential_value_index"].append(pvi)
        out["value_segment"].append(segment_of(cvi, pvi, vs))
    sm = sm.copy()
    for col in VALUE_COLUMNS:
        sm[col] = pd.Series(out[col], index=sm.index, dtype=object if col == "value_segment" else np.float64)
    return sm


# --------------------------------------------------------------------------------------------
# 7. Monthly tables: KPIs, segments, concentration, key accounts
# --------------------------------------------------------------------------------------------


def kpi_months(sm: pd.DataFrame) -> pd.DataFrame:
    """One row per month, dimension and value, over the subscriber-month rows of each group."""
    out = []
    for dimension in KPI_DIMENSIONS:
        values = pd.Series("ALL", index=sm.index) if dimension == "ALL" else sm[dimension]
        for (month, value), g in sm.groupby([sm["month"], values], sort=True):
            active = len(g)
            opening, closing = int(g["opening"].sum()), int(g["closing"].sum())
            churned = int(g["churned_in_month"].sum())
            revenue = int(g["revenue_fen"].sum())
            out.append({
                "month": month,
                "dimension": dimension,
                "dimension_value": value,
                "active_subscribers": active,
                "opening_subscribers": opening,
                "closing_subscribers": closing,
                "gross_adds": int(g["gross_add"].sum()),
                "churned_subscribers": churned,
                "churn_rate": churned / opening if opening else np.nan,
                "revenue_fen": revenue,
                "arpu_fen": round_half_up(Fraction(2 * revenue, opening + closing)) if opening + closing else np.nan,
                "voice_mou_per_sub": float(Fraction(int(g["_voice_sec"].sum()), 60 * active)),
                "data_mb_per_sub": float(Fraction(int(g["_data_bytes"].sum()), MIB * active)),
            })
    frame = pd.DataFrame(out, columns=KPI_COLUMNS)
    for col in ("churn_rate", "arpu_fen", "voice_mou_per_sub", "data_mb_per_sub"):
        frame[col] = frame[col].astype(np.float64)
    return frame


def _ratio(numerator, denominator) -> float:
    """numerator / denominator as a double; NaN (NULL) when the denominator is 0."""
    return float(Fraction(numerator) / Fraction(denominator)) if denominator else np.nan


def _frame(rows: list[dict], columns: list[str], floats: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for col in floats:
        frame[col] = frame[col].astype(np.float64)
    return frame


def segment_summaries(sm: pd.DataFrame, config: dict) -> pd.DataFrame:
    """One row per month of `sm` and value segment (all four, even when empty).

    revenue_growth: over the segment's rows with a prior (rows of the subscriber in M-3..M-1),
    sum of revenue_fen / sum of the prior mean revenue - 1; NULL without such a row or when that
    prior sum is 0.
    """
    keys, back = _history(sm)
    revenue = sm["revenue_fen"].tolist()
    prior = [_mean([revenue[j] for j in back(i, (1, 2, 3))]) for i in range(len(sm))]
    months = np.array([k[1] for k in keys], dtype=np.int64)
    segments = sm["value_segment"].to_numpy()
    rows = []
    for month in sorted(set(months.tolist())):
        in_month = months == month
        month_revenue = sum(revenue[i] for i in np.flatnonzero(in_month))
        for segment in SEGMENTS:
            idx = np.flatnonzero(in_month & (segments == segment))
            seg_revenue = sum(revenue[i] for i in idx)
            opening = int(sm["opening"].to_numpy()[idx].sum())
            closing = int(sm["closing"].to_numpy()[idx].sum())
            with_prior = [i for i in idx if prior[i] is not None]
            prior_sum = sum(prior[i] for i in with_prior)
            current = [round_fraction(v) for v in sm["current_value_index"].to_numpy()[idx]]
            potential = [round_fraction(v) for v in sm["potential_value_index"].to_numpy()[idx]]
            rows.append({
                "month": month_start(month),
                "value_segment": segment,
                "subscribers": len(idx),
                "revenue_fen": seg_revenue,
                "revenue_share": _ratio(seg_revenue, month_revenue),
                "arpu_fen": (round_half_up(Fraction(2 * seg_revenue, opening + closing))
                             if opening + closing else np.nan),
                "recommended_strategy": config["segment_strategies"][segment],
                "avg_current_value_index": round_half_up(_mean(current), 6) if current else np.nan,
                "avg_potential_value_index": round_half_up(_mean(potential), 6) if potential else np.nan,
                "revenue_growth": (float(Fraction(sum(revenue[i] for i in with_prior)) / prior_sum - 1)
                                   if with_prior and prior_sum else np.nan),
            })
    return _frame(rows, SEGMENT_SUMMARY_COLUMNS, ("revenue_share", "arpu_fen", "avg_current_value_index",
                                                  "avg_potential_value_index", "revenue_growth"))


def segment_migrations(sm: pd.DataFrame) -> pd.DataFrame:
    """One row per month and (from_segment, to_segment) that occurs among the month's rows.

    from: NEW for a gross add, else the segment of the subscriber's row in M-1, else UNKNOWN;
    to: CHURNED when churned in M, else the segment of M.
    """
    keys, back = _history(sm)
    segments = sm["value_segment"].tolist()
    moves = pd.DataFrame({
        "month": [month_start(k[1]) for k in keys],
        "from_segment": [
            "NEW" if added else next((segments[j] for j in back(i, (1,))), "UNKNOWN")
            for i, added in enumerate(sm["gross_add"])
        ],
        "to_segment": ["CHURNED" if churned else segments[i] for i, churned in enumerate(sm["churned_in_month"])],
        "revenue_fen": sm["revenue_fen"].to_numpy(dtype=np.int64),
    })
    out = moves.groupby(["month", "from_segment", "to_segment"], as_index=False).agg(
        subscribers=("revenue_fen", "size"), revenue_fen=("revenue_fen", "sum"))
    return out[SEGMENT_MIGRATION_COLUMNS].astype({"subscribers": np.int64, "revenue_fen": np.int64})


def concentration(revenues) -> tuple[float, float]:
    """(top20_revenue_share, gini) of one month's revenues, negative revenue counted as 0; NaN
    when the total is 0."""
    x = sorted(max(int(v), 0) for v in revenues)
    n, total = len(x), sum(x)
    if total == 0:
        return np.nan, np.nan
    top = -(-n // 5)  # ceil(0.2 n)
    gini = Fraction(2 * sum(i * v for i, v in enumerate(x, start=1)), n * total) - Fraction(n + 1, n)
    return float(Fraction(sum(x[n - top:]), total)), float(gini)


def lorenz(revenues) -> list[tuple[int, float, float]]:
    """(point, population_share, revenue_share) for point 0..100: the poorest floor(n p / 100)
    subscribers and their share of revenue (negative counted as 0; NaN when the total is 0)."""
    x = sorted(max(int(v), 0) for v in revenues)
    n, total = len(x), sum(x)
    cumulative = [0, *np.cumsum(x, dtype=object).tolist()] if x else [0]
    out = []
    for p in range(101):
        i = n * p // 100
        out.append((p, float(Fraction(i, n)) if n else np.nan, _ratio(cumulative[i], total)))
    return out


def revenue_concentrations(sm: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(revenue_concentration, revenue_lorenz) over each month's subscriber-month rows."""
    rows, points = [], []
    for month, g in sm.groupby("month", sort=True):
        top20, gini = concentration(g["revenue_fen"])
        rows.append({"month": month, "top20_revenue_share": top20, "gini": gini, "subscribers": len(g)})
        points += [{"month": month, "point": p, "population_share": pop, "revenue_share": share}
                   for p, pop, share in lorenz(g["revenue_fen"])]
    return (_frame(rows, REVENUE_CONCENTRATION_COLUMNS, ("top20_revenue_share", "gini")),
            _frame(points, REVENUE_LORENZ_COLUMNS, ("population_share", "revenue_share")))


def health_penalties(lines: int, churned: int, complaints: int, change: Fraction | None,
                     params: dict) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """(health_score, churn_penalty, decline_penalty, complaint_penalty), exact and unrounded."""
    churn = min(_exact(params["churn_penalty_max"]),
                _exact(params["churn_penalty_per_pct"]) * Fraction(churned, lines) * 100)
    decline = Fraction(0) if change is None else min(
        _exact(params["decline_penalty_max"]), _exact(params["decline_penalty_per_pct"]) * max(0, -change) * 100)
    complaint = min(_exact(params["complaint_penalty_max"]),
                    _exact(params["complaint_penalty_per_100_lines"]) * Fraction(complaints, lines) * 100)
    return max(Fraction(0), 100 - churn - decline - complaint), churn, decline, complaint


def key_account_months(sm: pd.DataFrame, config: dict, months: list[int] | None = None) -> pd.DataFrame:
    """One row per month and group_id (lines without a group are not key accounts).

    `months` are the built months (YYYYMM; default: the months of `sm`): revenue_change_3m is
    NULL when M-3 is not among them or the group's revenue in M-3 was not positive.
    """
    params = config["key_accounts"]
    frame = sm.assign(_m=_months(sm["month"]))
    built = set(months if months is not None else frame["_m"])
    totals = frame.groupby("_m")["revenue_fen"].sum().to_dict()
    grouped = frame[frame["group_id"].notna()].groupby(["_m", "group_id"])
    sums = grouped.agg(lines=("subscriber_id", "size"), active_lines=("closing", "sum"),
                       revenue_fen=("revenue_fen", "sum"), churned_lines=("churned_in_month", "sum"),
                       complaint_count=("complaint_count", "sum"))
    revenue_of = sums["revenue_fen"].to_dict()
    rows = []
    for (month, group), g in sums.iterrows():
        before = add_months(month, -3)
        then = revenue_of.get((before, group), 0)
        change = Fraction(int(g["revenue_fen"]), int(then)) - 1 if before in built and then > 0 else None
        health, churn, decline, complaint = health_penalties(
            int(g["lines"]), int(g["churned_lines"]), int(g["complaint_count"]), change, params)
        rows.append({
            "month": month_start(month),
            "group_id": group,
            "lines": int(g["lines"]),
            "active_lines": int(g["active_lines"]),
            "revenue_fen": int(g["revenue_fen"]),
            "revenue_share": _ratio(int(g["revenue_fen"]), int(totals[month])),
            "revenue_change_3m": float(change) if change is not None else np.nan,
            "churned_lines": int(g["churned_lines"]),
            "complaint_count": int(g["complaint_count"]),
            "health_score": round_half_up(health),
            "churn_penalty": float(churn),
            "decline_penalty": float(decline),
            "complaint_penalty": float(complaint),
        })
    frame = _frame(rows, KEY_ACCOUNT_COLUMNS, ("revenue_share", "revenue_change_3m", "health_score",
                                               "churn_penalty", "decline_penalty", "complaint_penalty"))
    return frame.sort_values(["month", "group_id"], ignore_index=True)


# --------------------------------------------------------------------------------------------
# 8. Customer lifetime value given the published sBG parameters (docs/value.md, CLV)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def discounted_residual_lifetime(alpha: float, beta: float, tenure: int, rate: float, horizon: int | None) -> float:
    """sum_{k=1..H} S(n+k)/S(n) / (1+d)^k, S(n+k)/S(n) = prod_{j=n}^{n+k-1} (beta+j)/(alpha+beta+j).

    Without a horizon the series runs until its terms no longer change the sum (it is the
    closed form 2F1(1, beta+n; alpha+beta+n; 1/(1+d)) - 1).
    """
    total, survival, discount, k = 0.0, 1.0, 1.0, 0
    while horizon is None or k < horizon:
        survival *= (beta + tenure + k) / (alpha + beta + tenure + k)
        discount /= 1 + rate
        term = survival * discount
        total += term
        k += 1
        if horizon is None and (term <= total * 1e-17 or k >= 10_000_000):
            break
    return total


def clv_given_model(subscriber_month: pd.DataFrame, clv_model: pd.DataFrame, config: dict) -> pd.DataFrame:
    """clv_fen of each subscriber-month given the sBG parameters of `clv_model`.

    subscriber_month needs month, subscriber_id, payment_type, value_segment (the cohort_groups
    of the config), margin_3m_fen, tenure_months, status_at_month_end, churned_in_month;
    clv_model needs month, cohort_group ("<payment_type>|<value_segment>"), alpha, beta.
    The CLV of s in M: 0 when s churned in M or is not ACTIVE/SUSPENDED at month end; NULL when
    the group of s's row of M has no (finite) parameters for M; else
    round(margin_3m_fen x discounted residual lifetime at tenure_months), half away from zero.

    Returns month (as given), subscriber_id, clv_fen (int or None) and clv_unrounded (NaN when
    NULL).
    """
    params = config["clv"]
    rate = (1.0 + params["annual_discount_rate"]) ** (1.0 / 12.0) - 1.0
    horizon = params["horizon_months"]
    fitted = {
        (int(m), str(g)): (float(a), float(b))
        for m, g, a, b in zip(month_of(clv_model["month"]), clv_model["cohort_group"], clv_model["alpha"],
                              clv_model["beta"])
        if a is not None and b is not None and np.isfinite(float(a)) and np.isfinite(float(b))
    }
    groups = [subscriber_month[c].astype(str) for c in params["cohort_groups"]]
    group = groups[0].str.cat(groups[1:], sep="|") if len(groups) > 1 else groups[0]
    clv, exact = [], []
    for month, g, margin, tenure, status, churned in zip(
        month_of(subscriber_month["month"]), group, subscriber_month["margin_3m_fen"],
        subscriber_month["tenure_months"], subscriber_month["status_at_month_end"],
        subscriber_month["churned_in_month"],
    ):
        fit = fitted.get((int(month), g))
        if bool(churned) or status not in ACTIVE_STATUSES:
            value = 0.0
        elif fit is None or margin is None or pd.isna(margin):
            value = np.nan
        else:
            value = float(margin) * discounted_residual_lifetime(fit[0], fit[1], int(tenure), rate, horizon)
        exact.append(value)
        clv.append(None if np.isnan(value) else int(round_fraction(value, 0)))
    return pd.DataFrame({
        "month": subscriber_month["month"].to_numpy(),
        "subscriber_id": subscriber_month["subscriber_id"].to_numpy(),
        "clv_fen": pd.Series(clv, dtype=object).to_numpy(),
        "clv_unrounded": np.array(exact, dtype=np.float64),
    })


# --------------------------------------------------------------------------------------------
# The whole recomputation
# --------------------------------------------------------------------------------------------


def recompute(landing: Path, hmac_key: str, config: dict | None = None) -> Reference:
    """Every table of `Reference` from the landing zone; `config` defaults to config/analytics.json."""
    config = config if config is not None else load_config()
    landing = Path(landing)
    found = discover(landing, [*DAILY_FEEDS, "bill"])
    snaps = load_snapshots(found["subscriber"])
    snapshot_days = {day for day, d in found["subscriber"].items() if d.valid}
    holders = number_holders(snaps)
    records = {feed: load_event_records(feed, found[feed], snapshot_days, holders) for feed in EVENT_FEEDS}
    usage = {feed: monthly_sums(r) for feed, r in records.items()}
    lines = load_bill_lines(found["bill"])
    revenue, billed = revenue_by_subscriber(lines)
    months = complete_months(found, billed)
    sm = subscriber_months(
        snaps, snapshot_days, months, usage, revenue, hmac_key,
        recharges=recharge_counts(records["recharge"]),
        contacts=voice_contacts(records["cdr_voice"]),
        allowances=plan_allowances(found["plan"], [month_end(m) for m in months]),
    )
    sm = value_columns(sm, account_bills(lines), bill_payments(records["recharge"]), config)
    concentration_frame, lorenz_frame = revenue_concentrations(sm)
    return Reference(
        complete_months=[month_start(m) for m in months],
        subscriber_month=sm[SUBSCRIBER_MONTH_COLUMNS].copy(),
        kpi_month=kpi_months(sm),
        segment_summary=segment_summaries(sm, config),
        segment_migration=segment_migrations(sm),
        revenue_concentration=concentration_frame,
        revenue_lorenz=lorenz_frame,
        key_account_month=key_account_months(sm, config, months),
        lost_customers=lost_customers(sm, snaps, records["cdr_voice"], config),
    )


# --------------------------------------------------------------------------------------------
# 8. Lost customers (docs/churn.md)
# --------------------------------------------------------------------------------------------

LOST_CUSTOMER_COLUMNS = [
    "month", "subscriber_id", "msisdn_key", "terminate_reason", "tenure_months", "last_3m_revenue_fen",
    "value_segment_before", "offnet_share_before", "complaints_before", "winback_score", "winback_priority",
]
COMPETITORS = ("CUCC", "CTCC")


def lost_customers(sm: pd.DataFrame, snaps: pd.DataFrame, voice: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Per subscription terminated in a month: the churn month and the two before summed over the
    months with a row, the segment of M-1, the terminate reason of M's last snapshot, and the
    win-back score (reason weight x 3-month revenue) ranked within the month."""
    weights = config["churn"]["winback"]["reason_weights"]
    offnet = monthly_sums(voice[voice["other_operator"].isin(COMPETITORS)])
    records = sm.to_dict("records")
    by_key = {(r["subscriber_id"], ymd(r["month"]) // 100): r for r in records}
    ends = snaps.set_index(["day", "subscriber_id"])["terminate_reason"].to_dict()
    rows = []
    for r in (r for r in records if r["churned_in_month"]):
        sid, m = r["subscriber_id"], ymd(r["month"]) // 100
        present = [by_key[k] for k in ((sid, add_months(m, -i)) for i in range(3)) if k in by_key]
        revenue = sum(x["revenue_fen"] for x in present)
        voice_sec = sum(x["_voice_sec"] for x in present)
        off = sum(offnet.get((sid, ymd(x["month"]) // 100), 0) for x in present)
        before = by_key.get((sid, add_months(m, -1)))
        reason = ends.get((month_end(m), sid))
        reason = None if reason is None or pd.isna(reason) or reason == "" else reason
        rows.append({
            "month": r["month"], "subscriber_id": sid, "msisdn_key": r["msisdn_key"],
            "terminate_reason": reason, "tenure_months": r["tenure_months"], "last_3m_revenue_fen": revenue,
            "value_segment_before": before["value_segment"] if before is not None else None,
            "offnet_share_before": round(off / voice_sec, 6) if voice_sec else np.nan,
            "complaints_before": sum(x["complaint_count"] for x in present),
            "winback_score": round_half_up(Fraction(str(weights.get(reason, 0.0))) * revenue) if reason else 0.0,
        })
    frame = pd.DataFrame(rows, columns=LOST_CUSTOMER_COLUMNS[:-1])
    ranked = frame[frame["winback_score"] > 0].sort_values(["month", "winback_score", "subscriber_id"],
                                                           ascending=[True, False, True])
    frame["winback_priority"] = pd.Series(ranked.groupby("month").cumcount() + 1, dtype="Int64")
    frame["winback_priority"] = frame["winback_priority"].astype(object).where(frame["winback_priority"].notna(), None)
    return frame[LOST_CUSTOMER_COLUMNS].sort_values(["month", "subscriber_id"], ignore_index=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python recompute.py LANDING HMAC_KEY", file=sys.stderr)
        return 2
    started = time.perf_counter()
    ref = recompute(Path(argv[0]), argv[1])
    elapsed = time.perf_counter() - started
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"complete months: {[m.isoformat() for m in ref.complete_months]}")
        print(f"subscriber_month rows: {len(ref.subscriber_month)}, kpi_month rows: {len(ref.kpi_month)}")
        print(ref.kpi_month[ref.kpi_month["dimension"] == "ALL"].to_string(index=False))
        print(ref.subscriber_month[["month", "subscriber_id", *VALUE_COLUMNS]].head().to_string(index=False))
        for name in ("segment_summary", "segment_migration", "revenue_concentration", "revenue_lorenz",
                     "key_account_month"):
            frame = getattr(ref, name)
            print(f"\n{name}: {len(frame)} rows")
            print(frame.drop(columns=["recommended_strategy"], errors="ignore").head(12).to_string(index=False))
    print(f"recomputed in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
