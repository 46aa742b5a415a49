"""Bad records planted on purpose, each with exactly one defect so its reason is unambiguous.

A bad record is an extra line (its own fresh id, never a copy of a good record) built from a
good record of the same delivery, with one field (or the field count) broken.
"""

from __future__ import annotations

import numpy as np

from . import catalog as cat

REASONS: tuple[str, ...] = (
    "field_count",
    "bad_encoding",
    "missing_value",
    "bad_number",
    "bad_timestamp",
    "bad_code",
    "out_of_range",
    "bad_msisdn",
    "outside_window",
    "unknown_subscriber",
)

# feed -> reason -> the field that carries the defect (None: the line's field count)
DEFECT_FIELDS: dict[str, dict[str, str | None]] = {
    "cdr_voice": {
        "field_count": None, "bad_encoding": "cell_id", "missing_value": "cell_id",
        "bad_number": "duration_sec", "bad_timestamp": "start_time", "bad_code": "direction",
        "out_of_range": "duration_sec", "bad_msisdn": "msisdn", "outside_window": "start_time",
        "unknown_subscriber": "msisdn",
    },
    "cdr_sms": {
        "field_count": None, "bad_encoding": "other_party", "missing_value": "other_party",
        "bad_number": "charge_fen", "bad_timestamp": "event_time", "bad_code": "sms_type",
        "bad_msisdn": "msisdn", "outside_window": "event_time", "unknown_subscriber": "msisdn",
    },
    "cdr_data": {
        "field_count": None, "bad_encoding": "apn", "missing_value": "apn",
        "bad_number": "uplink_bytes", "bad_timestamp": "start_time", "bad_code": "rat",
        "out_of_range": "downlink_bytes", "bad_msisdn": "msisdn", "outside_window": "start_time",
        "unknown_subscriber": "msisdn",
    },
    "recharge": {
        "field_count": None, "bad_encoding": "channel", "missing_value": "channel",
        "bad_number": "amount_fen", "bad_timestamp": "txn_time", "bad_code": "txn_type",
        "bad_msisdn": "msisdn", "outside_window": "txn_time", "unknown_subscriber": "msisdn",
    },
    "ticket": {
        "field_count": None, "missing_value": "category", "bad_number": "satisfaction",
        "bad_timestamp": "created_time", "bad_code": "channel", "out_of_range": "satisfaction",
        "bad_msisdn": "msisdn", "outside_window": "created_time", "unknown_subscriber": "msisdn",
    },
    "survey": {
        "field_count": None, "missing_value": "overall_score", "bad_number": "value_score",
        "bad_timestamp": "survey_date", "out_of_range": "service_score", "bad_msisdn": "msisdn",
        "outside_window": "survey_date",
    },
}

BAD_CODES = {"direction": "XX", "sms_type": "SMS", "rat": "6G", "txn_type": "TOPUP", "channel": "WECHAT"}
# GBK bytes of Chinese words: not valid UTF-8, the typical "file in the wrong encoding" record
INVALID_UTF8 = tuple(w.encode("gbk") for w in ("中文", "话单", "基站", "营业厅", "充值卡"))
for _b in INVALID_UTF8:
    try:
        _b.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # pragma: no cover - guards the constant above
        raise AssertionError(f"{_b!r} decodes as UTF-8")
    if any(c in _b for c in b"|\r\n"):  # pragma: no cover
        raise AssertionError(f"{_b!r} holds a separator byte")


def strip_prefix(msisdn: str) -> str:
    if msisdn.startswith("+86"):
        return msisdn[3:]
    if msisdn.startswith("86") and len(msisdn) == 13:
        return msisdn[2:]
    return msisdn


def unknown_numbers(n: int, rng: np.random.Generator) -> np.ndarray:
    """Well-formed 11-digit numbers of other operators: no subscription of ours holds them."""
    prefixes = np.concatenate([cat.CUCC_PREFIXES, cat.CTCC_PREFIXES])
    return rng.choice(prefixes, n) * 10**8 + rng.integers(0, 10**8, n)


def break_record(feed: str, reason: str, fields: tuple[str, ...], template: str, new_id: str,
                 rng: np.random.Generator, *, shifted_ymd: int | None = None,
                 unknown_number: int | None = None) -> bytes:
    """A bad line (UTF-8 bytes, no terminator) from a good ``template`` line of ``feed``."""
    values = template.split("|")
    if len(values) != len(fields):
        raise ValueError(f"{feed}: template has {len(values)} fields, schema {len(fields)}")
    values[0] = new_id
    target = DEFECT_FIELDS[feed][reason]
    i = fields.index(target) if target is not None else -1
    extra_bytes = b""
    if reason == "field_count":
        if rng.random() < 0.5:
            values = values[:-1]
        else:
            values.append(values[-1] or "0")
    elif reason == "bad_encoding":
        extra_bytes = INVALID_UTF8[int(rng.integers(0, len(INVALID_UTF8)))]
    elif reason == "missing_value":
        values[i] = ""
    elif reason == "bad_number":
        values[i] = ("12a", "abc", "1O0", "7#5")[int(rng.integers(0, 4))]
    elif reason == "bad_timestamp":
        v = values[i]
        if len(v) == 14:
            options = (v[:13], f"{v[:4]}-{v[4:6]}-{v[6:8]} {v[8:10]}:{v[10:12]}:{v[12:]}", v[:8] + "T" + v[8:])
        else:
            options = (f"{v[:4]}-{v[4:6]}-{v[6:]}", v[:7], v[:6] + "32")
        values[i] = options[int(rng.integers(0, 3))]
    elif reason == "bad_code":
        values[i] = BAD_CODES[target]
    elif reason == "out_of_range":
        if target in ("duration_sec", "downlink_bytes"):
            values[i] = "-" + str(int(rng.integers(1, 5000)))
        elif target == "satisfaction":
            values[i] = ("0", "6", "9")[int(rng.integers(0, 3))]
        else:
            values[i] = ("0", "11", "12")[int(rng.integers(0, 3))]
    elif reason == "bad_msisdn":
        digits = strip_prefix(values[i])
        values[i] = digits[:10] if rng.random() < 0.5 else digits + str(int(rng.integers(0, 10)))
    elif reason == "outside_window":
        if shifted_ymd is None:
            raise ValueError("outside_window needs shifted_ymd")
        values[i] = str(shifted_ymd) + values[i][8:]
        if feed == "ticket":
            values[fields.index("resolved_time")] = ""
            values[fields.index("satisfaction")] = ""
    elif reason == "unknown_subscriber":
        if unknown_number is None:
            raise ValueError("unknown_subscriber needs unknown_number")
        values[i] = str(unknown_number)
    else:
        raise ValueError(f"unknown reason {reason!r}")
    parts = [v.encode("utf-8") for v in values]
    if extra_bytes:
        parts[i] = parts[i] + extra_bytes
    return b"|".join(parts)
