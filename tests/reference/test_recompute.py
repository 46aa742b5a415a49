"""The reference recomputation on small hand-written landing zones.

The main landing zone covers 2026-01-01 .. 2026-05-03 (January to April complete) with eleven
subscriptions, each carrying one or more of the cases below; every expected value is worked out
by hand in the comments.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_delivery
from tests.reference.recompute import (
    ControlEntry,
    Reference,
    discover,
    parse_control,
    recompute,
    round_half_up,
    verify_file,
)

KEY = "reference-test-secret"
JAN, FEB, MAR, APR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)
DAILY_FEEDS = ("subscriber", "plan", "cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket")


# --------------------------------------------------------------------------------------------
# Writing landing zones by the contract
# --------------------------------------------------------------------------------------------


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass
class Sub:
    """A subscription's snapshot rows: ACTIVE from activation, then `changes` from their day on."""

    sid: str
    msisdn: str
    activation: date
    city_code: str = "025"
    brand: str = "GOTONE"
    plan_id: str = "P1"
    payment_type: str = "POSTPAID"
    network_gen: str = "5G"
    group_id: str = ""
    name: str = "王伟"
    changes: list[tuple[date, dict]] = field(default_factory=list)

    def line(self, day: date) -> str | None:
        if day < self.activation:
            return None
        row = dict(
            city_code=self.city_code, brand=self.brand, plan_id=self.plan_id,
            payment_type=self.payment_type, network_gen=self.network_gen, status="ACTIVE",
            status_date=f"{self.activation:%Y%m%d}", terminate_reason="",
        )
        for since, change in self.changes:
            if since <= day:
                row.update(change)
        n = self.sid[1:]
        return "|".join([
            self.sid, self.msisdn, f"C{n}", f"A{n}", self.group_id, self.name, "", "M", "1980",
            row["city_code"], row["brand"], row["plan_id"], row["payment_type"], row["network_gen"],
            f"{self.activation:%Y%m%d}", row["status"], row["status_date"], row["terminate_reason"], "STORE",
        ])


def ended(day: date, status: str = "TERMINATED", reason: str = "VOLUNTARY", **more) -> tuple[date, dict]:
    return day, dict(status=status, status_date=f"{day:%Y%m%d}", terminate_reason=reason if status == "TERMINATED" else "", **more)


def voice(cdr_id, msisdn, start, duration, direction="MO", cell="C001"):
    return f"{cdr_id}|{msisdn}|13912345678|{direction}|{start}|{duration}|LOCAL|ON_NET|{cell}|0"


def sms(cdr_id, msisdn, t, direction="MO", sms_type="P2P"):
    return f"{cdr_id}|{msisdn}|13912345678|{direction}|{t}|{sms_type}|CMCC|10"


def data(cdr_id, msisdn, start, up, down):
    return f"{cdr_id}|{msisdn}|{start}|60|{up}|{down}|5G|CMNET|C001|0"


def recharge(txn_id, msisdn, t, txn_type, amount):
    return f"{txn_id}|A1|{msisdn}|{t}|{txn_type}|{amount}|ONLINE"


def ticket(ticket_id, msisdn, created, complaint, resolved="", satisfaction=""):
    return f"{ticket_id}|{msisdn}|{created}|HOTLINE|BILLING|{complaint}|{resolved}|{satisfaction}"


def bill_lines(month: str, amounts: dict[str, int | list[tuple[str, int]]]) -> list[str]:
    """Bill lines of a month: per subscriber one MONTHLY_FEE amount, or a list of (item, amount)."""
    out = []
    for sid, items in amounts.items():
        items = [("MONTHLY_FEE", items)] if isinstance(items, int) else items
        for i, (item, amount) in enumerate(items):
            out.append(f"B{month}{sid}{i}|A{sid[1:]}|{sid}|{month}|{item}|{amount}|{month}28|")
    return out


class Landing:
    """Lines per feed and day; `write` delivers every daily feed every day from `first` to `last`
    (empty files where there is nothing), plus the bill deliveries."""

    def __init__(self, first: date, last: date, subs: list[Sub]):
        self.first, self.last, self.subs = first, last, subs
        self.lines: dict[tuple[str, date], list[list[str | bytes]]] = defaultdict(lambda: [[]])
        self.options: dict[tuple[str, date], dict] = {}

    def add(self, feed: str, day: date, *lines: str | bytes, file: int = 0) -> None:
        files = self.lines[(feed, day)]
        while len(files) <= file:
            files.append([])
        files[file].extend(lines)

    def style(self, feed: str, day: date, **options) -> None:
        self.options[(feed, day)] = options

    def write(self, root: Path) -> Path:
        for day in days(self.first, self.last):
            generated = {
                "subscriber": [line for sub in self.subs if (line := sub.line(day)) is not None],
                "plan": ["P1|畅享套餐|POSTPAID|5800|300|100|10240|5G"],
            }
            for feed in DAILY_FEEDS:
                files = [list(lines) for lines in self.lines.get((feed, day), [[]])]
                files[0] = generated.get(feed, []) + files[0]
                write_delivery(root, feed, day, files, **self.options.get((feed, day), {}))
        for (feed, day), files in self.lines.items():
            if feed == "bill":
                write_delivery(root, feed, day, files, **self.options.get((feed, day), {}))
        return root


# --------------------------------------------------------------------------------------------
# The main landing zone
# --------------------------------------------------------------------------------------------

N01, N02, N03, N04, N05, N06 = (f"138000000{i:02d}" for i in range(1, 7))
N09, N10, N11 = "13800000009", "13800000010", "13800000011"
REASSIGNED = "13900000009"  # S07 until its termination on Feb 14, S08 from Feb 20
UNKNOWN = "13700000000"  # nobody's number

SUBS = [
    Sub("S01", N01, date(2024, 5, 15), changes=[(date(2026, 3, 31), dict(plan_id="P3"))]),
    # terminated on Feb 1; its TERMINATED rows move it to city 0999, which must not count
    Sub("S02", N02, date(2023, 3, 10), brand="MZONE", plan_id="P2", payment_type="PREPAID", network_gen="4G",
        changes=[ended(date(2026, 2, 1), city_code="0999")]),
    Sub("S03", N03, date(2026, 1, 31), city_code="0512", brand="EASYOWN", plan_id="P2", payment_type="PREPAID",
        network_gen="4G", name="南京某某科技有限公司"),
    Sub("S04", N04, date(2025, 6, 1), city_code="0512",
        changes=[ended(date(2026, 2, 10), status="SUSPENDED"), ended(date(2026, 3, 5), status="ACTIVE")]),
    Sub("S05", N05, date(2025, 12, 20), city_code="0510", brand="EASYOWN", plan_id="P2", payment_type="PREPAID",
        network_gen="4G"),
    Sub("S06", N06, date(2026, 1, 1), city_code="0999"),
    Sub("S07", REASSIGNED, date(2024, 1, 1), network_gen="4G", changes=[ended(date(2026, 2, 14), reason="PORT_OUT")]),
    Sub("S08", REASSIGNED, date(2026, 2, 20), city_code="0510", brand="MZONE", plan_id="P2", payment_type="PREPAID"),
    Sub("S09", N09, date(2025, 10, 31), city_code="0510"),
    Sub("S10", N10, date(2026, 3, 5), plan_id="P9", changes=[ended(date(2026, 3, 20), reason="NON_PAYMENT")]),
    # activated and terminated the same day; its (terminated) rows change city on Mar 20
    Sub("S11", N11, date(2026, 3, 7), city_code="0513", plan_id="P8",
        changes=[ended(date(2026, 3, 7)), (date(2026, 3, 20), dict(city_code="0514"))]),
]

REVENUE = {
    "202601": {"S01": 5000, "S02": 3000, "S03": 300, "S04": 4000, "S05": 2000, "S06": 1000, "S07": 2500, "S09": 1500},
    "202602": {"S01": 5200, "S02": 100, "S03": 2000, "S04": 4000, "S05": 2000, "S06": 1000, "S07": 1200, "S08": 1000,
               "S09": 1500},
    "202603": {"S01": 5300, "S03": 4000, "S04": 4000, "S05": 2000, "S06": 1000, "S08": 2000, "S09": 1501, "S10": 800},
    "202604": {"S01": 5400, "S03": 4000, "S04": 4000, "S05": 2000, "S06": 1000, "S08": 2000, "S09": 1501},
}
# The corrected February bill (delivered Mar 10): S01 gets an adjustment, S04's lines are gone.
FEB_CORRECTED = {**REVENUE["202602"], "S01": [("MONTHLY_FEE", 5200), ("ADJUSTMENT", -1000)]}
del FEB_CORRECTED["S04"]


def d(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def build_main(root: Path) -> Path:
    land = Landing(JAN, date(2026, 5, 3), SUBS)

    # --- voice: S01 Jan = 120 + 60 + 30 + 90 = 300 s; Feb = 75 + 45 = 120 s
    land.add("cdr_voice", d("20260105"),
             voice("V1", N01, "20260105100000", 120),
             voice("V1", N01, "20260105100000", 120),          # same file twice: counts once
             voice("V40", UNKNOWN, "20260105110000", 999),      # unknown subscriber
             voice("V41", N01, "20260105120000", -5),           # negative duration
             voice("V42", N01, "2026010512XX00", 50),           # bad timestamp
             voice("V43", N01, "20260105120000", 50, direction="XX"),  # bad code
             voice("V44", N01, "20260105120000", 50, cell=""),  # missing value
             voice("V45", "1380000", "20260105120000", 50),     # bad msisdn
             "V46|13800000001|13912345678|MO|20260105120000|50|LOCAL|ON_NET|C001",  # field count
             "")                                                # blank line
    land.style("cdr_voice", d("20260105"), gz=True)
    land.add("cdr_voice", d("20260106"), voice("V1", N01, "20260105100000", 120))  # re-delivered: once
    land.add("cdr_voice", d("20260110"), voice("V2", "+86" + N01, "20260110080000", 60),
             voice("V49", N01, "20260110246000", 1000))                         # no such clock time
    land.add("cdr_voice", d("20260115"), voice("V3", "86" + N01, "20260115080000", 30, direction="MT"))
    land.add("cdr_voice", d("20260125"), voice("V47", N01, "20260120080000", 50))  # outside the window
    land.add("cdr_voice", d("20260202"), voice("V4", N01, "20260131235000", 90))    # late: January
    land.add("cdr_voice", d("20260210"), voice("V21", N01, "20260210080000", 75))
    land.style("cdr_voice", d("20260210"), crlf=True)
    land.add("cdr_voice", d("20260303"), voice("V20", N01, "20260228230000", 45))   # 3 days late: February
    land.add("cdr_voice", d("20260301"), voice("V48", N01, "20260229120000", 7777))  # no Feb 29 in 2026
    # --- the reassigned number: S07 gets 100 + 200 s, S08 600 s, Feb 17 belongs to nobody
    land.add("cdr_voice", d("20260210"), voice("V30", REASSIGNED, "20260210090000", 100))
    land.add("cdr_voice", d("20260214"), voice("V31", REASSIGNED, "20260214090000", 200))  # terminated that day
    land.add("cdr_voice", d("20260217"), voice("V32", REASSIGNED, "20260217090000", 400))
    land.add("cdr_voice", d("20260225"), voice("V33", REASSIGNED, "20260225090000", 600))

    # --- SMS: S05 Jan = 3 (MO, MT, every type; one delivered twice)
    land.add("cdr_sms", d("20260107"), sms("M1", N05, "20260107090000"), sms("M2", N05, "20260107100000", "MT", "A2P"))
    land.add("cdr_sms", d("20260108"), sms("M2", N05, "20260107100000", "MT", "A2P"), sms("M3", N05, "20260108090000",
                                                                                         sms_type="MMS"))
    # --- data: S05 Jan = 3 MiB + 0.5 MiB; the undecodable GBK line would add 10 MiB
    mib = 1048576
    land.add("cdr_data", d("20260109"), data("D1", N05, "20260109090000", mib, 2 * mib),
             data("D2", N05, "20260109100000", mib // 4, mib // 4),
             data("D3", N05, "20260109110000", 5 * mib, 5 * mib).replace("CMNET", "CM\udcffNET").encode("gbk", "surrogateescape"))
    land.style("cdr_data", d("20260109"), encoding="GBK", crlf=True)
    # --- recharge: S05 Jan = 5500 (R1's later version) - 1000 (refund); the bill payment does not count
    land.add("recharge", d("20260111"), recharge("R1", N05, "20260111090000", "RECHARGE", 5000),
             recharge("R2", N05, "20260111100000", "REFUND", -1000),
             recharge("R3", N05, "20260111110000", "BILL_PAYMENT", 3000))
    land.add("recharge", d("20260112"), recharge("R1", N05, "20260111090000", "RECHARGE", 5500))
    # --- tickets: S01 Jan complaints T1, T2, T4 = 3; Feb T5 = 1
    land.add("ticket", d("20260110"), ticket("T1", N01, "20260110090000", 1),
             ticket("T6", N01, "20260101090000", 1))                                # outside the window
    land.add("ticket", d("20260112"), ticket("T1", N01, "20260110090000", 1, "20260112090000", 4))  # resolved
    land.add("ticket", d("20260120"), ticket("T3", N01, "20260120090000", 0))       # not a complaint
    land.add("ticket", d("20260130"), ticket("T2", N01, "20260130090000", 1))
    land.add("ticket", d("20260202"), ticket("T2", N01, "20260130090000", 1, "20260202090000", 5))
    land.add("ticket", d("20260205"), ticket("T4", N01, "20260125090000", 1, "20260205090000"))  # first seen resolved
    land.add("ticket", d("20260203"), ticket("T5", N01, "20260203090000", 1))
    land.add("ticket", d("20260302"), ticket("T7", N01, "20260227090000", 1, "20260230090000"))  # no Feb 30

    # --- snapshots: GBK on month ends (Chinese names), gzip and CRLF on some days
    for day in (d("20260131"), d("20260228"), d("20260115")):
        land.style("subscriber", day, encoding="GBK")
    land.style("subscriber", d("20260331"), encoding="GBK", gz=True, crlf=True)
    land.style("subscriber", d("20260301"), gz=True)

    # --- bills: one delivery per month on the 2nd; February corrected on Mar 10
    land.add("bill", d("20260202"), *bill_lines("202601", REVENUE["202601"]),
             "B_BAD|A01|S01|202601|BONUS|99999|20260128|")                       # bad code
    land.add("bill", d("20260302"), *bill_lines("202602", REVENUE["202602"]))
    land.add("bill", d("20260310"), *bill_lines("202602", FEB_CORRECTED))
    land.add("bill", d("20260402"), *bill_lines("202603", REVENUE["202603"]))
    land.add("bill", d("20260502"), *bill_lines("202604", REVENUE["202604"]))
    return land.write(root)


@pytest.fixture(scope="module")
def main_landing(tmp_path_factory) -> Path:
    return build_main(tmp_path_factory.mktemp("landing"))


@pytest.fixture(scope="module")
def ref(main_landing) -> Reference:
    return recompute(main_landing, KEY)


def row(ref: Reference, month: date, sid: str) -> pd.Series:
    sm = ref.subscriber_month
    found = sm[(sm["month"] == month) & (sm["subscriber_id"] == sid)]
    assert len(found) == 1, f"{sid} has {len(found)} rows in {month}"
    return found.iloc[0]


def kpi(ref: Reference, month: date, dimension: str, value: str) -> pd.Series:
    k = ref.kpi_month
    found = k[(k["month"] == month) & (k["dimension"] == dimension) & (k["dimension_value"] == value)]
    assert len(found) == 1
    return found.iloc[0]


# --------------------------------------------------------------------------------------------
# Months and rows
# --------------------------------------------------------------------------------------------


def test_complete_months_are_the_billed_fully_delivered_months(ref):
    assert ref.complete_months == [JAN, FEB, MAR, APR]


def test_rows_per_month(ref):
    by_month = ref.subscriber_month.groupby("month")["subscriber_id"].apply(sorted).to_dict()
    assert by_month == {
        JAN: ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "S09"],
        FEB: ["S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08", "S09"],
        MAR: ["S01", "S03", "S04", "S05", "S06", "S08", "S09", "S10", "S11"],
        APR: ["S01", "S03", "S04", "S05", "S06", "S08", "S09"],
    }


def test_columns_and_types(ref):
    sm = ref.subscriber_month
    assert list(sm.columns) == [
        "month", "subscriber_id", "msisdn_key", "customer_id", "group_id", "city_code", "brand",
        "plan_id", "payment_type", "network_gen", "tenure_months", "status_at_month_end",
        "revenue_fen", "arpu_3m_fen", "voice_mou", "sms_count", "data_mb", "recharge_fen",
        "complaint_count", "churned_in_month", "opening", "closing", "gross_add",
    ]
    assert all(type(m) is date for m in sm["month"])
    assert str(sm["revenue_fen"].dtype) == "int64" and str(sm["voice_mou"].dtype) == "float64"
    assert row(ref, JAN, "S01")["group_id"] is None and row(ref, JAN, "S01")["customer_id"] == "C01"


def test_first_month_opening_needs_activation_before_the_first_day(ref):
    # no snapshot of Dec 31: opening = active on Jan 1 and activated before it (S06 activated Jan 1)
    flags = {sid: tuple(row(ref, JAN, sid)[["opening", "gross_add", "closing"]]) for sid in ("S01", "S05", "S06")}
    assert flags == {"S01": (True, False, True), "S05": (True, False, True), "S06": (False, True, True)}


def test_line_terminated_on_the_first_has_a_churned_row(ref):
    r = row(ref, FEB, "S02")
    assert (r["opening"], r["closing"], r["gross_add"], r["churned_in_month"]) == (True, False, False, True)
    assert r["status_at_month_end"] == "TERMINATED"
    assert r["city_code"] == "025"  # attributes of Jan 31, its last active day, not of its TERMINATED rows
    assert r["revenue_fen"] == 100
    assert not ((ref.subscriber_month["subscriber_id"] == "S02") & (ref.subscriber_month["month"] == MAR)).any()


def test_activation_on_the_last_day_of_the_month(ref):
    r = row(ref, JAN, "S03")
    assert (r["opening"], r["gross_add"], r["closing"], r["churned_in_month"]) == (False, True, True, False)
    assert r["tenure_months"] == 0 and r["city_code"] == "0512"
    assert row(ref, FEB, "S03")["opening"] and not row(ref, FEB, "S03")["gross_add"]


def test_suspended_line_is_active(ref):
    feb = row(ref, FEB, "S04")
    assert (feb["status_at_month_end"], feb["closing"], feb["churned_in_month"]) == ("SUSPENDED", True, False)
    assert row(ref, MAR, "S04")["opening"] and row(ref, MAR, "S04")["status_at_month_end"] == "ACTIVE"


def test_added_and_churned_within_a_month(ref):
    r = row(ref, MAR, "S10")
    assert (r["opening"], r["gross_add"], r["closing"], r["churned_in_month"]) == (False, True, False, True)
    assert r["plan_id"] == "P9" and r["status_at_month_end"] == "TERMINATED"


def test_activated_and_terminated_the_same_day_takes_the_last_row_of_the_month(ref):
    r = row(ref, MAR, "S11")
    assert (r["gross_add"], r["churned_in_month"], r["closing"]) == (True, True, False)
    assert r["city_code"] == "0514"  # never active: attributes of Mar 31


def test_month_end_attributes(ref):
    assert row(ref, FEB, "S01")["plan_id"] == "P1"
    assert row(ref, MAR, "S01")["plan_id"] == "P3"  # changed on Mar 31


def test_tenure_months(ref):
    got = {(sid, m): int(row(ref, m, sid)["tenure_months"])
           for sid, m in [("S01", JAN), ("S01", APR), ("S03", FEB), ("S05", JAN), ("S09", FEB), ("S08", FEB)]}
    # S01 2024-05-15: 12*2 + 1 - 5 = 20 in Jan; S09 2025-10-31: 12 + 2 - 10 = 4 in Feb
    assert got == {("S01", JAN): 20, ("S01", APR): 23, ("S03", FEB): 1, ("S05", JAN): 1, ("S09", FEB): 4,
                   ("S08", FEB): 0}


def test_msisdn_key_is_the_hmac_of_the_number(ref):
    expected = hmac.new(KEY.encode(), N01.encode(), hashlib.sha256).hexdigest()
    assert row(ref, JAN, "S01")["msisdn_key"] == expected
    assert row(ref, FEB, "S07")["msisdn_key"] == row(ref, FEB, "S08")["msisdn_key"]  # the same number
    assert row(ref, FEB, "S07")["msisdn_key"] != expected


def test_opening_plus_adds_minus_churned_is_closing(ref):
    sm = ref.subscriber_month
    counts = sm.groupby("month")[["opening", "gross_add", "churned_in_month", "closing"]].sum()
    assert counts.to_dict("index") == {
        JAN: {"opening": 6, "gross_add": 2, "churned_in_month": 0, "closing": 8},
        FEB: {"opening": 8, "gross_add": 1, "churned_in_month": 2, "closing": 7},
        MAR: {"opening": 7, "gross_add": 2, "churned_in_month": 2, "closing": 7},
        APR: {"opening": 7, "gross_add": 0, "churned_in_month": 0, "closing": 7},
    }


# --------------------------------------------------------------------------------------------
# Usage and money
# --------------------------------------------------------------------------------------------


def test_voice_counts_late_prefixed_and_duplicated_calls_once_and_skips_bad_ones(ref):
    assert row(ref, JAN, "S01")["voice_mou"] == 300 / 60  # V1 once, V2 (+86), V3 (86, MT), V4 late
    assert row(ref, FEB, "S01")["voice_mou"] == 120 / 60  # V21 (CRLF), V20 delivered Mar 3


def test_reassigned_number_goes_to_the_holder_of_the_day(ref):
    assert row(ref, FEB, "S07")["voice_mou"] == 300 / 60  # Feb 10, and Feb 14 (terminated that day)
    assert row(ref, FEB, "S08")["voice_mou"] == 600 / 60  # Feb 25; Feb 17 belongs to nobody


def test_unknown_and_bad_records_count_nowhere(ref):
    totals = ref.subscriber_month.groupby("month")["voice_mou"].sum().to_dict()
    assert totals == {JAN: 5.0, FEB: 2.0 + 5.0 + 10.0, MAR: 0.0, APR: 0.0}


def test_sms_data_recharge(ref):
    r = row(ref, JAN, "S05")
    assert r["sms_count"] == 3
    assert r["data_mb"] == 3.5  # the undecodable GBK line is bad
    assert r["recharge_fen"] == 4500


def test_complaints_by_creation_month_with_the_ticket_window(ref):
    assert row(ref, JAN, "S01")["complaint_count"] == 3  # T1 (updated), T2 (resolved in Feb), T4
    assert row(ref, FEB, "S01")["complaint_count"] == 1


def test_revenue_and_the_corrected_bill(ref):
    assert row(ref, JAN, "S01")["revenue_fen"] == 5000  # the BONUS line is bad
    assert row(ref, FEB, "S01")["revenue_fen"] == 4200  # the correction of Mar 10 wins
    assert row(ref, FEB, "S04")["revenue_fen"] == 0  # missing from the correction: the month is replaced whole
    assert row(ref, FEB, "S08")["revenue_fen"] == 1000
    assert row(ref, MAR, "S11")["revenue_fen"] == 0  # no bill lines


def test_arpu_3m_counts_only_months_with_a_row(ref):
    assert row(ref, JAN, "S01")["arpu_3m_fen"] == 5000.0
    assert row(ref, MAR, "S03")["arpu_3m_fen"] == 2100.0  # (300 + 2000 + 4000) / 3
    assert row(ref, MAR, "S08")["arpu_3m_fen"] == 1500.0  # (1000 + 2000) / 2: no January row
    assert row(ref, MAR, "S09")["arpu_3m_fen"] == 1500.33
    assert row(ref, APR, "S09")["arpu_3m_fen"] == 1500.67
    assert row(ref, MAR, "S04")["arpu_3m_fen"] == 2666.67  # (4000 + 0 + 4000) / 3
    assert row(ref, MAR, "S10")["arpu_3m_fen"] == 800.0


# --------------------------------------------------------------------------------------------
# KPIs
# --------------------------------------------------------------------------------------------


def test_kpi_all(ref):
    jan = kpi(ref, JAN, "ALL", "ALL")
    assert tuple(jan[["active_subscribers", "opening_subscribers", "closing_subscribers", "gross_adds",
                      "churned_subscribers", "revenue_fen"]]) == (8, 6, 8, 2, 0, 19300)
    assert jan["churn_rate"] == 0.0
    assert jan["arpu_fen"] == 2757.14  # 19300 / ((6 + 8) / 2)
    assert jan["voice_mou_per_sub"] == 5.0 / 8
    assert jan["data_mb_per_sub"] == 3.5 / 8
    feb = kpi(ref, FEB, "ALL", "ALL")
    assert feb["churn_rate"] == 0.25 and feb["revenue_fen"] == 4200 + 100 + 2000 + 0 + 2000 + 1000 + 1200 + 1000 + 1500


def test_kpi_nulls(ref):
    new_city = kpi(ref, JAN, "city_code", "0999")  # only S06, added in January
    assert math.isnan(new_city["churn_rate"]) and new_city["arpu_fen"] == 2000.0  # 1000 / ((0 + 1) / 2)
    p9 = kpi(ref, MAR, "plan_id", "P9")  # only S10: added and churned in March
    assert (p9["opening_subscribers"], p9["closing_subscribers"], p9["gross_adds"], p9["churned_subscribers"]) == (0, 0, 1, 1)
    assert math.isnan(p9["churn_rate"]) and math.isnan(p9["arpu_fen"])


def test_kpi_groups_use_month_end_attributes(ref):
    assert kpi(ref, FEB, "city_code", "025")["churned_subscribers"] == 2  # S02 and S07 stay in 025
    assert set(ref.kpi_month[ref.kpi_month["month"] == FEB].query("dimension == 'city_code'")["dimension_value"]) == {
        "025", "0510", "0512", "0999"}
    assert kpi(ref, MAR, "plan_id", "P3")["active_subscribers"] == 1


def test_every_dimension_adds_up_to_all(ref):
    k = ref.kpi_month
    assert set(k["dimension"]) == {"ALL", "city_code", "brand", "payment_type", "plan_id", "network_gen"}
    additive = ["active_subscribers", "opening_subscribers", "closing_subscribers", "gross_adds",
                "churned_subscribers", "revenue_fen"]
    all_rows = k[k["dimension"] == "ALL"].set_index("month")[additive]
    for dimension, g in k[k["dimension"] != "ALL"].groupby("dimension"):
        pd.testing.assert_frame_equal(g.groupby("month")[additive].sum(), all_rows, check_names=False)
    identity = k["opening_subscribers"] + k["gross_adds"] - k["churned_subscribers"] == k["closing_subscribers"]
    assert identity.all()
    assert len(k[(k["month"] == JAN) & (k["dimension"] == "payment_type")]) == 2


# --------------------------------------------------------------------------------------------
# Invalid and missing deliveries
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged(main_landing, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("damaged") / "landing"
    shutil.copytree(main_landing, root)
    # Feb 15 voice: one byte changed, same size -> md5 check fails -> February incomplete
    f = root / "cdr_voice/20260215/CDR_VOICE_20260215_001.dat"
    f.write_bytes(b"V99|13800000001|13912345678|MO|20260215080000|60|LOCAL|ON_NET|C001|0\n")
    ctl = root / "cdr_voice/20260215/CDR_VOICE_20260215.ctl"
    name, rows, size, md5, enc = ctl.read_text().strip().split("|")
    ctl.write_text(f"{name}|1|{f.stat().st_size}|{'0' * 32}|{enc}\n")
    # May 2 tickets (late events of April): the control file is missing -> not a delivery -> April incomplete
    (root / "ticket/20260502/TICKET_20260502.ctl").unlink()
    # a March bill re-delivery that fails its checks changes nothing
    bad = write_delivery(root, "bill", d("20260405"), [bill_lines("202603", {"S01": 9999})])
    (bad / "BILL_20260405_001.dat").write_bytes(b"B|A01|S01|202603|MONTHLY_FEE|1|20260328|\n")
    return recompute(root, KEY)


def test_invalid_or_missing_delivery_makes_its_month_incomplete(damaged):
    assert damaged.complete_months == [JAN, MAR]
    assert set(damaged.subscriber_month["month"]) == {JAN, MAR}
    assert set(damaged.kpi_month["month"]) == {JAN, MAR}


def test_incomplete_months_have_no_rows_for_arpu_3m(damaged):
    assert row(damaged, MAR, "S03")["arpu_3m_fen"] == 2150.0  # (300 + 4000) / 2: February has no row
    assert row(damaged, MAR, "S08")["arpu_3m_fen"] == 2000.0
    assert row(damaged, MAR, "S01")["revenue_fen"] == 5300  # the failed bill re-delivery is ignored
    assert row(damaged, MAR, "S04")["opening"]  # the other months are unchanged


def test_no_bill_no_complete_month(tmp_path):
    land = Landing(FEB, date(2026, 3, 3), [Sub("S01", N01, date(2025, 1, 1))])
    land.write(tmp_path)
    ref = recompute(tmp_path, KEY)
    assert ref.complete_months == [] and ref.subscriber_month.empty and ref.kpi_month.empty
    land.add("bill", d("20260302"), *bill_lines("202602", {"S01": 700}))
    land.write(tmp_path)
    ref = recompute(tmp_path, KEY)
    assert ref.complete_months == [FEB]
    r = row(ref, FEB, "S01")
    assert (r["opening"], r["revenue_fen"], r["arpu_3m_fen"]) == (True, 700, 700.0)


# --------------------------------------------------------------------------------------------
# Verification of single files and control files
# --------------------------------------------------------------------------------------------


def _entry(folder: Path, name: str, data: bytes, rows: int, **override) -> ControlEntry:
    (folder / name).write_bytes(data)
    fields = dict(name=name, rows=rows, size=len(data), md5=hashlib.md5(data).hexdigest(), encoding="UTF-8")
    fields.update(override)
    return ControlEntry(**fields)


def test_verify_file_checks(tmp_path):
    body = b"a|b\r\n\n  \r\nc|d\n"
    assert verify_file(tmp_path, _entry(tmp_path, "X_001.dat", body, rows=2)) is None
    assert verify_file(tmp_path, _entry(tmp_path, "X_002.dat", body, rows=3)) == "row_count"
    assert verify_file(tmp_path, _entry(tmp_path, "X_003.dat", body, rows=2, size=5)) == "byte_size"
    assert verify_file(tmp_path, _entry(tmp_path, "X_004.dat", body, rows=2, md5="0" * 32)) == "md5"
    assert verify_file(tmp_path, ControlEntry("X_005.dat", 0, 0, "0" * 32, "UTF-8")) == "file_missing"
    packed = gzip.compress(body)
    assert verify_file(tmp_path, _entry(tmp_path, "X_006.dat.gz", packed, rows=2)) is None
    assert verify_file(tmp_path, _entry(tmp_path, "X_007.dat.gz", packed[:-6], rows=2)) == "gzip_integrity"
    assert verify_file(tmp_path, _entry(tmp_path, "X_008.dat", b"", rows=0)) is None


def test_control_file_format():
    entries = parse_control("A_001.dat|2|10|" + "a" * 32 + "|GBK\r\n\nA_002.dat.gz|0|20|" + "B" * 32 + "|UTF-8\n")
    assert entries == (ControlEntry("A_001.dat", 2, 10, "a" * 32, "GBK"), ControlEntry("A_002.dat.gz", 0, 20, "b" * 32, "UTF-8"))
    for bad in ("A_001.dat|2|10|" + "a" * 32, "A_001.dat|x|10|" + "a" * 32 + "|GBK", "A_001.dat|2|10|" + "a" * 32 + "|LATIN1", ""):
        with pytest.raises(ValueError):
            parse_control(bad)


def test_delivery_without_control_file_is_not_discovered(tmp_path):
    write_delivery(tmp_path, "plan", d("20260101"), [["P1|x|PREPAID|1|1|1|1|4G"]], control=False)
    write_delivery(tmp_path, "plan", d("20260102"), [["P1|x|PREPAID|1|1|1|1|4G"]])
    found = discover(tmp_path, ["plan"])
    assert list(found["plan"]) == [d("20260102")] and found["plan"][d("20260102")].valid


def test_round_half_up():
    assert [round_half_up(Fraction(n, 8)) for n in (1, 3, -1, -3)] == [0.13, 0.38, -0.13, -0.38]
    assert round_half_up(Fraction(2, 3)) == 0.67 and round_half_up(Fraction(5)) == 5.0
