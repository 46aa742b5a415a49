"""Independent recomputation of `crm.subscriber_month` and `crm.kpi_month` from a landing zone.

A test oracle for the integration tests. It reads the BOSS export files itself (control files,
size / md5 / gzip / row-count checks, declared encodings, CRLF), applies the record rules of
docs/ingest.md and computes every column as docs/metrics.md defines it. It shares no code with
the pipeline: the feed field lists below are written out from the input contract
(boss-exports.md), and only the standard library, pandas and numpy are used.

    ref = recompute(Path("landing"), hmac_key="secret")
    ref.complete_months, ref.subscriber_month, ref.kpi_month

Dates inside this module are `int`s `YYYYMMDD` (months `YYYYMM`), which sort and compare like
the dates they stand for; the published frames use `datetime.date`.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import hmac
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

KPI_DIMENSIONS = ("ALL", "city_code", "brand", "payment_type", "plan_id", "network_gen")
SUBSCRIBER_MONTH_COLUMNS = [
    "month", "subscriber_id", "msisdn_key", "customer_id", "group_id", "city_code", "brand",
    "plan_id", "payment_type", "network_gen", "tenure_months", "status_at_month_end",
    "revenue_fen", "arpu_3m_fen", "voice_mou", "sms_count", "data_mb", "recharge_fen",
    "complaint_count", "churned_in_month", "opening", "closing", "gross_add",
]
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
        month is a `datetime.date`, group_id / status_at_month_end may be None.
    kpi_month: KPI_COLUMNS, one row per month, dimension (KPI_DIMENSIONS) and value present in
        that month; NULL churn_rate / arpu_fen are NaN.
    """

    complete_months: list[date]
    subscriber_month: pd.DataFrame
    kpi_month: pd.DataFrame


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
    (int YYYYMMDD), months as int YYYYMM; NULL numbers and dates as 0, NULL strings as None.
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
    "subscriber_id", "msisdn", "customer_id", "group_id", "city_code", "brand", "plan_id",
    "payment_type", "network_gen", "activation_date", "status", "status_date",
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


def load_events(
    feed: str,
    deliveries: dict[date, Delivery],
    snapshot_days: set[date],
    holders: dict[int, pd.DataFrame],
) -> pd.DataFrame:
    """Per (subscriber_id, month): the summed metric value of the feed's surviving records.

    A delivery of day D counts only when the snapshot of D is loaded. Each record goes to the
    holder of its number on its event day (no holder: unknown subscriber, dropped); then per key
    the latest version wins.
    """
    key, event_field = EVENT_FEEDS[feed]
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
        })
        mapped = compact.merge(
            pd.concat(near), left_on=["event_day", "msisdn"], right_on=["day", "msisdn"], how="inner"
        )
        parts.append(mapped[["key", "_order", "subscriber_id", "event_day", "value"]])
    if not parts:
        return pd.DataFrame(columns=["subscriber_id", "month", "value"])
    records = pd.concat(parts, ignore_index=True)
    records = records.sort_values("_order", kind="stable").drop_duplicates("key", keep="last")
    records["month"] = records["event_day"] // 100
    return records.groupby(["subscriber_id", "month"], as_index=False)["value"].sum()


def load_revenue(deliveries: dict[date, Delivery]) -> tuple[dict[tuple[str, int], int], set[int]]:
    """Revenue per (subscriber_id, month) and the months billed.

    Each bill month comes entirely from the latest valid delivery holding (good) lines for it;
    within that delivery a repeated bill_line_id counts once (last line wins).
    """
    parts = []
    for day, delivery in sorted(deliveries.items()):
        if delivery.valid:
            rows = load_feed(delivery)
            parts.append(rows[["bill_line_id", "_order", "subscriber_id", "bill_month", "amount_fen"]].assign(
                business_date=ymd(day)))
    if not parts:
        return {}, set()
    lines = pd.concat(parts, ignore_index=True)
    latest = lines.groupby("bill_month")["business_date"].transform("max")
    lines = lines[lines["business_date"] == latest]
    lines = lines.sort_values("_order", kind="stable").drop_duplicates("bill_line_id", keep="last")
    sums = lines.groupby(["subscriber_id", "bill_month"])["amount_fen"].sum()
    revenue = {(sid, int(month)): int(v) for (sid, month), v in sums.items()}
    return revenue, {int(m) for m in lines["bill_month"].unique()}


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


def round_half_up(value: Fraction, places: int = 2) -> float:
    """Round an exact value to `places` decimals, ties away from zero."""
    scaled = abs(value) * 10**places
    units = int(scaled + Fraction(1, 2))  # floor for non-negative values
    return float(Fraction(units if value >= 0 else -units, 10**places))


def msisdn_key(msisdn: str, key: str) -> str:
    return hmac.new(key.encode("utf-8"), msisdn.encode("utf-8"), hashlib.sha256).hexdigest()


def _is_active(row) -> bool:
    return row is not None and row.status in ACTIVE_STATUSES


def subscriber_months(
    snaps: pd.DataFrame,
    snapshot_days: set[date],
    months: list[int],
    usage: dict[str, dict[tuple[str, int], int]],
    revenue: dict[tuple[str, int], int],
    hmac_key: str,
) -> pd.DataFrame:
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
            })

    # arpu_3m: mean revenue over the subscriber's rows in M, M-1, M-2 (only months with a row)
    has_row = {(r["subscriber_id"], ymd(r["month"]) // 100): r["revenue_fen"] for r in rows}
    for r in rows:
        month = ymd(r["month"]) // 100
        window = [has_row[(r["subscriber_id"], add_months(month, -k))] for k in range(3)
                  if (r["subscriber_id"], add_months(month, -k)) in has_row]
        r["arpu_3m_fen"] = round_half_up(Fraction(sum(window), len(window)))
        r["voice_mou"] = r["_voice_sec"] / 60
        r["data_mb"] = r["_data_bytes"] / 1048576

    frame = pd.DataFrame(rows, columns=[*SUBSCRIBER_MONTH_COLUMNS, "_voice_sec", "_data_bytes"])
    for col in ("tenure_months", "revenue_fen", "sms_count", "recharge_fen", "complaint_count",
                "_voice_sec", "_data_bytes"):
        frame[col] = frame[col].astype(np.int64)
    for col in ("arpu_3m_fen", "voice_mou", "data_mb"):
        frame[col] = frame[col].astype(np.float64)
    for col in ("churned_in_month", "opening", "closing", "gross_add"):
        frame[col] = frame[col].astype(bool)
    return frame.sort_values(["month", "subscriber_id"], ignore_index=True)


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
                "data_mb_per_sub": float(Fraction(int(g["_data_bytes"].sum()), 1048576 * active)),
            })
    frame = pd.DataFrame(out, columns=KPI_COLUMNS)
    for col in ("churn_rate", "arpu_fen", "voice_mou_per_sub", "data_mb_per_sub"):
        frame[col] = frame[col].astype(np.float64)
    return frame


# --------------------------------------------------------------------------------------------
# The whole recomputation
# --------------------------------------------------------------------------------------------


def recompute(landing: Path, hmac_key: str) -> Reference:
    landing = Path(landing)
    found = discover(landing, [*DAILY_FEEDS, "bill"])
    snaps = load_snapshots(found["subscriber"])
    snapshot_days = {day for day, d in found["subscriber"].items() if d.valid}
    holders = number_holders(snaps)
    usage = {}
    for feed in EVENT_FEEDS:
        sums = load_events(feed, found[feed], snapshot_days, holders)
        usage[feed] = {(sid, int(m)): int(v) for sid, m, v in sums.itertuples(index=False)}
    revenue, billed = load_revenue(found["bill"])
    months = complete_months(found, billed)
    sm = subscriber_months(snaps, snapshot_days, months, usage, revenue, hmac_key)
    kpi = kpi_months(sm)
    return Reference(
        complete_months=[month_start(m) for m in months],
        subscriber_month=sm[SUBSCRIBER_MONTH_COLUMNS].copy(),
        kpi_month=kpi,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python recompute.py LANDING HMAC_KEY", file=sys.stderr)
        return 2
    started = time.perf_counter()
    ref = recompute(Path(argv[0]), argv[1])
    print(f"complete months: {[m.isoformat() for m in ref.complete_months]}")
    print(f"subscriber_month rows: {len(ref.subscriber_month)}, kpi_month rows: {len(ref.kpi_month)}")
    print(ref.kpi_month[ref.kpi_month["dimension"] == "ALL"].to_string(index=False))
    print(f"recomputed in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
