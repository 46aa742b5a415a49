"""Type and validate the string fields of split lines, one Arrow batch at a time.

Every check is a vectorised Arrow or numpy operation over the whole batch; only rejected records
(a fraction of a percent of real deliveries) go through Python, to write their reason's detail.
`parse.type_and_validate` runs this inside Spark tasks (`mapInArrow`), so a valid record costs
a few machine instructions per field instead of a row-at-a-time JVM expression per check.

Rules (the reason codes and their order are in `parse`'s docstring): per field in field order,
the checks below in their order, the first failure of the record wins; `outside_window` is
checked only on records that pass every field check.

    missing_value   empty field that the contract says is not nullable         detail: <empty>
    bad_msisdn      not 11 digits once a +86 / 86 prefix is dropped             masked value
    bad_number      not [-]digits (at most 18), or outside the int range        the value
    bad_timestamp   not yyyyMMddHHmmss / yyyyMMdd / yyyyMM, or no such instant  the value
    bad_code        a flag other than 0 or 1; a code not in the allowed list    the value (masked if PII)
    out_of_range    below the field's min or above its max                      the value
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_pipeline.feeds import FeedSpec, FieldSpec

LATE_DAYS = 3  # event records may arrive this many days after their business date
LINEAGE = ["business_date", "delivery_id", "source_file", "line_no"]

MICROS_PER_DAY = 86_400_000_000
_ARROW_TYPES = {
    "string": pa.string(), "msisdn": pa.string(), "phone": pa.string(), "int": pa.int32(), "long": pa.int64(),
    "timestamp": pa.timestamp("us"), "date": pa.date32(), "month": pa.date32(), "flag": pa.bool_(),
}
_COUNTRY_PREFIX = r"^(?:\+86|86)(\d{11})$"


def mask(value: str | None) -> str | None:
    """PII as it may leave the restricted zone: the first 3 and last 2 characters
    (`columns.mask_value`, for one value)."""
    if value is None:
        return None
    if len(value) <= 5:
        return "*****"
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


def _flags(arr: pa.Array) -> np.ndarray:
    """An Arrow boolean array as numpy, NULL as False."""
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


def _matches(arr: pa.Array, pattern: str) -> np.ndarray:
    return _flags(pc.match_substring_regex(arr, pattern))


def _normalise_msisdn(arr: pa.Array) -> pa.Array:
    """Drop a `+86` / `86` country prefix in front of an 11-digit number; keep anything else as is."""
    return pc.replace_substring_regex(arr, _COUNTRY_PREFIX, r"\1")


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm, vectorised)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _parse_instant(raw: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(ok, value) of `yyyyMMddHHmmss` (micros since the epoch), `yyyyMMdd` or `yyyyMM` (days since the
    epoch, the first of the month): ok where the text has that form and names a real instant."""
    width = {"timestamp": 14, "date": 8, "month": 6}[kind]
    ok = _matches(raw, rf"^\d{{{width}}}$")
    text = pc.if_else(pa.array(ok), raw, pa.scalar("0" * width))

    def part(start: int, stop: int) -> np.ndarray:
        return pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64()).to_numpy()

    y, m = part(0, 4), part(4, 6)
    d = part(6, 8) if width > 6 else np.ones_like(y)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_ok = (m >= 1) & (m <= 12)
    days_in = _DAYS_IN_MONTH[np.where(month_ok, m, 1)] + ((m == 2) & leap)
    ok &= month_ok & (d >= 1) & (d <= days_in)
    days = _days_from_civil(y, m, d)
    if width < 14:
        return ok, days
    hh, mi, ss = part(8, 10), part(10, 12), part(12, 14)
    ok &= (hh <= 23) & (mi <= 59) & (ss <= 59)
    return ok, (days * 86_400 + hh * 3_600 + mi * 60 + ss) * 1_000_000


Show = Callable[[int], "str | None"]


def _shown(arr: pa.Array, masked: bool) -> Show:
    """What a detail shows of row i's value (masked for PII); read only for rejected rows."""
    return lambda i: mask(arr[i].as_py()) if masked else arr[i].as_py()


def field_checks(f: FieldSpec, raw: pa.Array) -> tuple[pa.Array, list[tuple[np.ndarray, str, Show]]]:
    """The typed values of one field and its ordered (failure mask, reason, shown value) checks."""
    present = _flags(pc.is_valid(raw))
    original = _shown(raw, f.pii)
    checks: list[tuple[np.ndarray, str, Show]] = []
    if not f.nullable:
        checks.append((~present, "missing_value", lambda i: "<empty>"))
    values: np.ndarray | None = None  # numeric values, for the range checks
    valid = present
    if f.type == "msisdn":
        raw = _normalise_msisdn(raw)
        checks.append((present & ~_matches(raw, r"^\d{11}$"), "bad_msisdn", original))
        typed = raw
    elif f.type == "phone":
        typed = _normalise_msisdn(raw)
    elif f.type in ("int", "long"):
        valid = _matches(raw, r"^-?\d{1,18}$")
        values = pc.cast(pc.if_else(pa.array(valid), raw, pa.scalar("0")), pa.int64()).to_numpy()
        if f.type == "int":
            valid &= (values >= -(2**31)) & (values < 2**31)
        checks.append((present & ~valid, "bad_number", _shown(raw, False)))
        typed = pa.array(np.where(valid, values, 0), mask=~valid, type=pa.int64())
    elif f.type in ("timestamp", "date", "month"):
        valid, values = _parse_instant(raw, f.type)
        checks.append((present & ~valid, "bad_timestamp", _shown(raw, False)))
        storage = pa.int64() if f.type == "timestamp" else pa.int32()
        typed = pa.array(np.where(valid, values, 0), mask=~valid, type=storage)
    elif f.type == "flag":
        yes, no = _flags(pc.equal(raw, "1")), _flags(pc.equal(raw, "0"))
        valid = yes | no
        checks.append((present & ~valid, "bad_code", _shown(raw, False)))
        typed = pa.array(yes, mask=~valid, type=pa.bool_())
    else:
        typed = raw
    if f.allowed:
        allowed = _flags(pc.is_in(raw, value_set=pa.array(list(f.allowed), pa.string())))
        checks.append((present & ~allowed, "bad_code", original))
    for bound, outside in ((f.min, np.less), (f.max, np.greater)):
        if bound is not None:
            checks.append((valid & outside(values, bound), "out_of_range", _shown(raw, False)))
    return typed.cast(_ARROW_TYPES[f.type]), checks


def _window(spec: FeedSpec, typed: dict[str, pa.Array], raw: dict[str, pa.Array],
            business_days: np.ndarray) -> tuple[np.ndarray, Show] | None:
    """(outside mask, shown event time) of the delivery-window rule (`parse` docstring), or None.

    Event feeds: the event time in [business date - 3 days, business date + 1 day); tickets by
    their last change (resolution, else creation), never created after the window; snapshots may
    not describe the future; bills may not bill a month after the bill run. A NULL time never
    falls outside.
    """
    def values(name: str) -> tuple[np.ndarray, np.ndarray]:
        arr = typed[name]
        ok = _flags(pc.is_valid(arr))
        storage = pa.int64() if pa.types.is_timestamp(arr.type) else pa.int32()
        return ok, pc.fill_null(arr.view(storage), 0).to_numpy().astype(np.int64)

    day = business_days.astype(np.int64)
    lo, hi = (day - LATE_DAYS) * MICROS_PER_DAY, (day + 1) * MICROS_PER_DAY
    if spec.feed == "ticket":
        created_ok, created = values("created_time")
        resolved_ok, resolved = values("resolved_time")
        changed_ok, changed = resolved_ok | created_ok, np.where(resolved_ok, resolved, created)
        bad = (changed_ok & ((changed < lo) | (changed >= hi))) | (created_ok & (created >= hi))
        return bad, lambda i: raw["resolved_time" if resolved_ok[i] else "created_time"][i].as_py()
    if spec.kind == "event" and spec.event_time:
        ok, t = values(spec.event_time)
        if spec.field(spec.event_time).type == "date":
            bad = ok & ((t < day - LATE_DAYS) | (t > day))
        else:
            bad = ok & ((t < lo) | (t >= hi))
        return bad, _shown(raw[spec.event_time], False)
    if spec.feed == "subscriber":
        (a_ok, a), (s_ok, s) = values("activation_date"), values("status_date")
        bad = (a_ok & (a > day)) | (s_ok & (s > day))
        return bad, lambda i: "/".join(raw[n][i].as_py() for n, ok in (("activation_date", a_ok), ("status_date", s_ok))
                                       if ok[i])
    if spec.feed == "bill":
        ok, month = values("bill_month")
        first = business_days.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        return ok & (month > first), _shown(raw["bill_month"], False)
    return None


def typed_names(spec: FeedSpec) -> list[str]:
    """Columns of `validate_batch`'s output."""
    return [*LINEAGE, "raw_line", *spec.field_names, "reject_reason", "reject_detail"]


def validate_batch(batch: pa.RecordBatch, spec: FeedSpec) -> pa.RecordBatch:
    """LINEAGE + the feed's fields as strings -> LINEAGE, `raw_line` (the line rebuilt from its
    fields, for the quarantine), the typed fields, `reject_reason` and `reject_detail` (NULL on
    valid records)."""
    n = batch.num_rows
    raw = {f.name: batch.column(f.name) for f in spec.fields}
    typed: dict[str, pa.Array] = {}
    failed = np.full(n, -1, dtype=np.int32)
    rules: list[tuple[str, str, Show]] = []
    for f in spec.fields:
        typed[f.name], checks = field_checks(f, raw[f.name])
        for fails, reason, shown in checks:
            failed[(failed < 0) & fails] = len(rules)
            rules.append((reason, f.name, shown))
    window = _window(spec, typed, raw, batch.column("business_date").cast(pa.int32()).to_numpy())
    outside = (failed < 0) & window[0] if window is not None else np.zeros(n, dtype=bool)
    reasons = pa.nulls(n, pa.string())
    details = pa.nulls(n, pa.string())
    rejected = np.flatnonzero((failed >= 0) | outside)
    if len(rejected):
        reason_list: list[str | None] = [None] * n
        detail_list: list[str | None] = [None] * n
        for i in rejected:
            if failed[i] >= 0:
                reason, name, shown = rules[failed[i]]
                value = shown(i)
                reason_list[i], detail_list[i] = reason, f"{name}={'<null>' if value is None else value}"
            else:
                value = window[1](i)
                reason_list[i] = "outside_window"
                detail_list[i] = f"event time {'<null>' if value is None else value} outside the delivery window"
        reasons, details = pa.array(reason_list, pa.string()), pa.array(detail_list, pa.string())
    line = pc.binary_join_element_wise(*[raw[f.name] for f in spec.fields], "|",
                                       null_handling="replace", null_replacement="")
    columns = [batch.column(c) for c in LINEAGE] + [line] + [typed[f.name] for f in spec.fields] + [reasons, details]
    return pa.RecordBatch.from_arrays(columns, names=typed_names(spec))
