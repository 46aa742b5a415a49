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
    MIB,
    SEGMENTS,
    AccountBill,
    ControlEntry,
    Reference,
    clv_given_model,
    concentration,
    data_adoption,
    discover,
    growth,
    key_account_months,
    life_stage,
    load_config,
    logscore,
    lorenz,
    parse_control,
    postpaid_payment,
    prepaid_payment,
    recompute,
    revenue_concentrations,
    round_half_up,
    segment_migrations,
    segment_summaries,
    verify_file,
)

KEY = "reference-test-secret"
JAN, FEB, MAR, APR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)
DAILY_FEEDS = ("subscriber", "plan", "cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket")
CONFIG = load_config()  # config/analytics.json; the hand-worked values below use its documented defaults


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
    birth_year: str = "1980"
    account: str = ""  # default A<n>

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
            self.sid, self.msisdn, f"C{n}", self.account or f"A{n}", self.group_id, self.name, "", "M", self.birth_year,
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

    def __init__(self, first: date, last: date, subs: list[Sub], plans=None):
        self.first, self.last, self.subs = first, last, subs
        self.plans = plans or (lambda day: ["P1|畅享套餐|POSTPAID|5800|300|100|10240|5G"])
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
                "plan": self.plans(day),
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
        "margin_fen", "margin_3m_fen", "cv_revenue", "cv_margin", "cv_payment", "pv_revenue_growth",
        "pv_data_growth", "pv_tenure", "pv_data_adoption", "pv_network", "pv_life_stage",
        "pv_calling_circle", "pv_on_net_share", "current_value_index", "potential_value_index",
        "value_segment",
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
    assert set(k["dimension"]) == {"ALL", "city_code", "brand", "payment_type", "plan_id", "value_segment",
                                   "network_gen"}
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


# --------------------------------------------------------------------------------------------
# Customer value appraisal (docs/value.md): the score shapes
# --------------------------------------------------------------------------------------------


def test_logscore_values():
    # logscore(x; r, f) = 100 min(1, ln(1 + max(x, 0)/r) / ln(1 + f/r)); revenue r = 5000, f = 30000
    assert logscore(5000, 5000, 30000) == pytest.approx(100 * math.log(2) / math.log(7), abs=1e-12)  # 35.62: "50 CNY"
    assert logscore(10000, 5000, 30000) == pytest.approx(100 * math.log(3) / math.log(7), abs=1e-12)  # 56.46: "100 CNY"
    assert logscore(30000, 5000, 30000) == pytest.approx(100.0, abs=1e-12)
    assert logscore(90000, 5000, 30000) == 100.0  # capped
    assert logscore(0, 5000, 30000) == 0.0 and logscore(-700, 5000, 30000) == 0.0
    # tenure r = 12, f = 60: 15 months -> 100 ln(1 + 15/12) / ln(1 + 60/12) = 100 ln 2.25 / ln 6 = 45.26
    assert logscore(15, 12, 60) == pytest.approx(45.2588, abs=1e-4)


def test_growth_values():
    # growth = 50 + 50 clip(ln((max(now,0) + k) / (max(prior,0) + k)) / ln 2, -1, 1), k = 1000 fen
    assert growth(3000, 1000, 1000, 2.0, 50.0) == 100.0  # (3000+1000)/(1000+1000) = 2: doubling
    assert growth(1000, 3000, 1000, 2.0, 50.0) == 0.0  # 2000/4000 = 1/2: halving
    assert growth(2000, 2000, 1000, 2.0, 50.0) == 50.0  # no change
    assert growth(2000, 1000, 1000, 2.0, 50.0) == pytest.approx(50 + 50 * 0.5849625, abs=1e-6)  # log2(1.5) -> 79.25
    assert growth(2, 4, 1000, 2.0, 50.0) == pytest.approx(49.8562, abs=1e-4)  # ln(1002/1004)/ln 2 = -0.0028768
    assert growth(50000, 1000, 1000, 2.0, 50.0) == 100.0 and growth(0, 50000, 1000, 2.0, 50.0) == 0.0  # clipped
    assert growth(-300, 1000, 1000, 2.0, 50.0) == 0.0  # a negative amount counts as 0: 1000/2000
    assert growth(700, None, 1000, 2.0, 50.0) == 50.0  # no prior: neutral


def test_postpaid_payment_settles_the_oldest_bill_first():
    params = {"neutral": 50.0, "arrears_reference_fen": 10000, "arrears_max_penalty": 50.0}
    bills = [AccountBill(202601, billed=10000, settled=4000, due=20260225),  # outstanding 6000
             AccountBill(202602, billed=5000, settled=0, due=20260320),  # 5000
             AccountBill(202603, billed=4000, settled=0, due=20260420),  # 4000
             AccountBill(202604, billed=3000, settled=0, due=20260520)]  # due after April: outside every window below
    payments = [(20260125, 9999), (20260224, 6000), (20260318, 2000), (20260415, 4000), (20260428, 1000)]
    # January: no bill due in Nov 1 .. Jan 31 -> neutral
    assert postpaid_payment(bills, payments, 202601, params) == 50.0
    # February: window = {Jan}; payments from Feb 1 (Jan 25 is older); by Feb 25: 6000 >= 6000 -> on time;
    # arrears = 6000 - 6000 = 0 -> 100
    assert postpaid_payment(bills, payments, 202602, params) == 100.0
    # March: window = {Jan, Feb}; Feb: paid by Mar 20 = 8000 < 6000 + 5000 -> late; arrears 11000 - 8000 = 3000
    # -> 100 x 1/2 - 50 x 0.3 = 35
    assert postpaid_payment(bills, payments, 202603, params) == 35.0
    # April: window = {Jan, Feb, Mar}; Mar: paid by Apr 20 = 12000 < 15000 -> late, although the 4000 paid on
    # Apr 15 equals March's bill: it settles February's remaining 3000 first. Arrears 15000 - 13000 = 2000
    # -> 100 x 1/3 - 50 x 0.2 = 23.33
    assert postpaid_payment(bills, payments, 202604, params) == pytest.approx(100 / 3 - 10, abs=1e-12)


def test_postpaid_payment_edge_cases():
    params = {"neutral": 50.0, "arrears_reference_fen": 10000, "arrears_max_penalty": 50.0}
    # settled at the bill run: outstanding 0 is on time without any payment
    assert postpaid_payment([AccountBill(202603, 5000, 5000, 20260420)], [], 202604, params) == 100.0
    # a credit bill (negative) owes nothing
    assert postpaid_payment([AccountBill(202603, -300, 0, 20260420)], [], 202604, params) == 100.0
    # one bill, unpaid, 25000 outstanding: on_time 0, arrears penalty capped at 50 -> clipped at 0
    assert postpaid_payment([AccountBill(202603, 25000, 0, 20260420)], [], 202604, params) == 0.0
    # one bill, paid late but in full by month end: 0 on time, no arrears -> 0
    assert postpaid_payment([AccountBill(202603, 5000, 0, 20260420)], [(20260421, 5000)], 202604, params) == 0.0
    # paid before the due date: on time; an overpayment carries no credit beyond clipping at 100
    assert postpaid_payment([AccountBill(202603, 5000, 0, 20260420)], [(20260410, 9000)], 202604, params) == 100.0


def test_prepaid_regularity_and_life_stage_and_adoption():
    assert prepaid_payment(2, 3) == pytest.approx(200 / 3) and prepaid_payment(0, 1) == 0.0
    bands = {"neutral": 50.0, "bands": [[0, 17, 40.0], [18, 24, 90.0], [25, 34, 100.0], [35, 44, 80.0],
                                       [45, 54, 60.0], [55, 64, 40.0], [65, 150, 20.0]]}
    # age = year(M) - birth_year: 2026 - 2008 = 18 (band 18-24), - 1992 = 34, - 1961 = 65; unknown -> 50
    assert [life_stage(2026, by, bands) for by in (2008, 2009, 1992, 1991, 1961, None)] == [90.0, 40.0, 100.0, 80.0,
                                                                                           20.0, 50.0]
    # allowance 2048 MB, 1024 MB used -> 50; unknown plan or a plan without data -> 10240 MB
    assert data_adoption(1024 * MIB, 2048, 10240) == 50.0
    assert data_adoption(5120 * MIB, None, 10240) == 50.0 and data_adoption(5120 * MIB, 0, 10240) == 50.0
    assert data_adoption(30000 * MIB, 2048, 10240) == 100.0


# --------------------------------------------------------------------------------------------
# Customer value appraisal on a landing zone: the inputs reach the scores
# --------------------------------------------------------------------------------------------

P01, P02, Q01, Q02 = "13600000001", "13600000002", "13600000003", "13600000004"
VALUE_SUBS = [
    # V01 and V02 share the postpaid account A100 and the enterprise group G1
    Sub("V01", P01, date(2025, 1, 15), plan_id="PL1", group_id="G1", account="A100", birth_year="1996"),
    Sub("V02", P02, date(2025, 6, 10), plan_id="PL3", network_gen="4G", group_id="G1", account="A100",
        birth_year="2008"),
    Sub("V03", Q01, date(2024, 3, 1), plan_id="PL2", payment_type="PREPAID", network_gen="3G", birth_year=""),
    Sub("V04", Q02, date(2026, 2, 10), plan_id="PL9", payment_type="PREPAID", network_gen="2G", birth_year="1961",
        changes=[ended(date(2026, 4, 12))]),
]


def value_plans(day: date) -> list[str]:
    """PL2 has no data allowance; PL3's allowance doubles from Mar 31; PL9 is in no snapshot."""
    return ["PL1|全球通|POSTPAID|5800|300|100|10240|5G", "PL2|神州行|PREPAID|800|50|30|0|3G",
            f"PL3|动感地带|POSTPAID|1800|100|50|{2048 if day >= date(2026, 3, 31) else 1024}|4G"]


def bill(line_id, account, sid, month, amount, due, paid="", item="MONTHLY_FEE"):
    return f"{line_id}|{account}|{sid}|{month}|{item}|{amount}|{due}|{paid}"


def txn(txn_id, account, msisdn, t, txn_type, amount):
    return f"{txn_id}|{account}|{msisdn}|{t}|{txn_type}|{amount}|BANK"


def call(cdr_id, msisdn, other, start, duration, operator, direction="MO"):
    return f"{cdr_id}|{msisdn}|{other}|{direction}|{start}|{duration}|LOCAL|{operator}|C001|0"


def build_value_landing(root: Path) -> Path:
    land = Landing(JAN, date(2026, 5, 3), VALUE_SUBS, plans=value_plans)
    # --- bills. Account A100: Jan billed 10000, V02's 4000 paid at the bill run (Feb 2 <= due Feb 25, the
    # latest due date of the month's lines) -> outstanding 6000; Feb 5000 due Mar 20; Mar 3000 + 1500 - 500 =
    # 4000 due Apr 20 (the 1500 was paid Apr 25, after the due date: not settled); Apr due May 20.
    land.add("bill", d("20260202"), bill("J1", "A100", "V01", "202601", 6000, "20260225"),
             bill("J2", "A100", "V02", "202601", 4000, "20260220", "20260202"),
             bill("J3", "A03", "V03", "202601", 2000, "20260220", "20260131"))
    land.add("bill", d("20260302"), bill("F1", "A100", "V01", "202602", 3000, "20260320"),
             bill("F2", "A100", "V02", "202602", 2000, "20260320"),
             bill("F3", "A03", "V03", "202602", 2000, "20260320", "20260228"),
             bill("F4", "A04", "V04", "202602", 1000, "20260320", "20260228"))
    land.add("bill", d("20260402"), bill("M1", "A100", "V01", "202603", 3000, "20260420"),
             bill("M2", "A100", "V02", "202603", 1500, "20260420", "20260425"),
             bill("M3", "A100", "V02", "202603", -500, "20260420", item="DISCOUNT"),
             bill("M4", "A03", "V03", "202603", 2000, "20260420", "20260331"),
             bill("M5", "A04", "V04", "202603", 1000, "20260420", "20260331"))
    land.add("bill", d("20260502"), bill("A1", "A100", "V01", "202604", 3000, "20260520"),
             bill("A2", "A100", "V02", "202604", 1000, "20260520"),
             bill("A3", "A03", "V03", "202604", 2000, "20260520", "20260430"),
             bill("A4", "A04", "V04", "202604", 500, "20260520", "20260430"))
    # --- bill payments of A100 (made from V01's number)
    for txn_id, day, amount in [("X1", "20260125", 9999), ("X2", "20260224", 6000), ("X3", "20260318", 2000),
                                ("X4", "20260415", 4000), ("X5", "20260428", 1000)]:
        land.add("recharge", d(day), txn(txn_id, "A100", P01, day + "120000", "BILL_PAYMENT", amount))
    # --- prepaid top-ups: V03 recharges in Jan and Mar (a refund in Feb is no RECHARGE); V04 in Feb and Apr
    land.add("recharge", d("20260110"), txn("R10", "A03", Q01, "20260110090000", "RECHARGE", 5000))
    land.add("recharge", d("20260212"), txn("R11", "A03", Q01, "20260212090000", "REFUND", -1000))
    land.add("recharge", d("20260303"), txn("R12", "A03", Q01, "20260303090000", "RECHARGE", 3000))
    land.add("recharge", d("20260304"), txn("R12", "A03", Q01, "20260303090000", "RECHARGE", 3000))  # again: once
    land.add("recharge", d("20260210"), txn("R20", "A04", Q02, "20260210090000", "RECHARGE", 5000))
    land.add("recharge", d("20260401"), txn("R21", "A04", Q02, "20260401090000", "RECHARGE", 1000))
    # --- V01's calls. February: 13900000005 (45 s, delivered late). March: +86 13900000001 (ON_NET) and
    # 13900000001 (CMCC) are one ON_NET party, 86 13900000002, a fixed line and an international number:
    # 4 contacts, 1 on-net; 60 + 120 + 30 + 90 + 60 = 360 s. A call from nobody's number counts nowhere.
    land.add("cdr_voice", d("20260302"), call("W1", P01, "13900000005", "20260228230000", 45, "CMCC"))
    land.add("cdr_voice", d("20260305"), call("W2", P01, "+8613900000001", "20260305100000", 60, "ON_NET"))
    land.add("cdr_voice", d("20260306"), call("W3", P01, "13900000001", "20260306100000", 120, "CMCC", "MT"))
    land.add("cdr_voice", d("20260307"), call("W4", P01, "8613900000002", "20260307100000", 30, "CMCC"))
    land.add("cdr_voice", d("20260308"), call("W5", P01, "02512345678", "20260308100000", 90, "FIXED"))
    land.add("cdr_voice", d("20260309"), call("W6", P01, "0044201234567", "20260309100000", 60, "INTL"),
             call("W7", UNKNOWN, "13900000006", "20260309110000", 60, "ON_NET"))
    land.add("cdr_sms", d("20260310"), f"M10|{P01}|13900000009|MO|20260310090000|P2P|ON_NET|10")  # SMS: no contact
    # --- March data: V01 2048 MB, V02 1024 MB, V03 5120 MB, V04 20480 MB
    mib = 1048576
    land.add("cdr_data", d("20260312"), data("E1", P01, "20260312090000", 1024 * mib, 1024 * mib),
             data("E2", P02, "20260312090000", 512 * mib, 512 * mib),
             data("E3", Q01, "20260312090000", 2560 * mib, 2560 * mib),
             data("E4", Q02, "20260312090000", 10240 * mib, 10240 * mib))
    return land.write(root)


@pytest.fixture(scope="module")
def value_ref(tmp_path_factory) -> Reference:
    return recompute(build_value_landing(tmp_path_factory.mktemp("value")), KEY)


def test_value_landing_months_and_rows(value_ref):
    assert value_ref.complete_months == [JAN, FEB, MAR, APR]
    rows = value_ref.subscriber_month.groupby("month")["subscriber_id"].apply(sorted).to_dict()
    assert rows == {JAN: ["V01", "V02", "V03"], FEB: ["V01", "V02", "V03", "V04"], MAR: ["V01", "V02", "V03", "V04"],
                    APR: ["V01", "V02", "V03", "V04"]}


def test_margin_is_revenue_minus_the_cost_to_serve(value_ref):
    # cost = 1000 + 1.0 x voice_mou + 0.5 x sms_count + 0.3 x data_mb
    got = {m: row(value_ref, m, "V01")[["margin_fen", "margin_3m_fen"]].tolist() for m in (JAN, FEB, MAR, APR)}
    assert got == {
        JAN: [5000.0, 5000.0],  # 6000 - 1000
        FEB: [1999.25, 3499.63],  # 3000 - (1000 + 0.75 min); (5000 + 1999.25) / 2 = 3499.625, half up
        MAR: [1379.10, 2792.78],  # 3000 - (1000 + 6 + 0.5 + 614.4); 8378.35 / 3 = 2792.7833
        APR: [2000.0, 1792.78],  # (1999.25 + 1379.10 + 2000) / 3 = 1792.7833
    }
    assert row(value_ref, MAR, "V01")["cv_margin"] == pytest.approx(
        100 * math.log(1 + 2792.78 / 3000) / math.log(1 + 20000 / 3000), abs=1e-9)


def test_postpaid_payment_is_per_account_from_bills_and_bill_payments(value_ref):
    # the account A100 of test_postpaid_payment_settles_the_oldest_bill_first, built from the raw feeds
    for sid in ("V01", "V02"):
        got = [row(value_ref, m, sid)["cv_payment"] for m in (JAN, FEB, MAR, APR)]
        assert got == pytest.approx([50.0, 100.0, 35.0, 100 / 3 - 10], abs=1e-12)


def test_prepaid_payment_is_recharge_regularity(value_ref):
    # V03: RECHARGE in Jan and Mar (twice delivered), only a REFUND in Feb
    v03 = [row(value_ref, m, "V03")["cv_payment"] for m in (JAN, FEB, MAR, APR)]
    assert v03 == pytest.approx([100.0, 50.0, 200 / 3, 100 / 3])  # 1/1, 1/2, 2/3, (Feb, Mar, Apr) 1/3
    # V04 (added Feb 10): RECHARGE in Feb and Apr
    v04 = [row(value_ref, m, "V04")["cv_payment"] for m in (FEB, MAR, APR)]
    assert v04 == pytest.approx([100.0, 50.0, 200 / 3])


def test_calling_circle_and_on_net_share(value_ref):
    mar, feb = row(value_ref, MAR, "V01"), row(value_ref, FEB, "V01")
    assert mar["pv_calling_circle"] == pytest.approx(100 * math.log(1.4) / math.log(7), abs=1e-12)  # 4 -> 17.29
    assert mar["pv_on_net_share"] == 25.0  # 1 of 4
    assert feb["pv_calling_circle"] == pytest.approx(100 * math.log(1.1) / math.log(7), abs=1e-12)  # the late call
    assert feb["pv_on_net_share"] == 0.0
    assert row(value_ref, APR, "V01")[["pv_calling_circle", "pv_on_net_share"]].tolist() == [0.0, 0.0]
    assert mar["voice_mou"] == 6.0 and mar["sms_count"] == 1


def test_data_adoption_uses_the_plan_snapshot_of_the_last_day(value_ref):
    assert row(value_ref, MAR, "V01")["pv_data_adoption"] == 20.0  # 2048 of 10240 MB
    assert row(value_ref, MAR, "V02")["pv_data_adoption"] == 50.0  # 1024 of PL3's 2048 MB on Mar 31 (1024 before)
    assert row(value_ref, MAR, "V03")["pv_data_adoption"] == 50.0  # PL2 has no allowance: 5120 of 10240
    assert row(value_ref, MAR, "V04")["pv_data_adoption"] == 100.0  # PL9 unknown: 20480 of 10240, capped
    assert row(value_ref, APR, "V02")["pv_data_adoption"] == 0.0


def test_life_stage_network_tenure(value_ref):
    got = {sid: tuple(row(value_ref, MAR, sid)[["pv_life_stage", "pv_network"]])
           for sid in ("V01", "V02", "V03", "V04")}
    # ages 30, 18, unknown, 65; 5G, 4G, 3G, 2G
    assert got == {"V01": (100.0, 100.0), "V02": (90.0, 60.0), "V03": (50.0, 25.0), "V04": (20.0, 0.0)}
    # V01 in April: 15 months since 2025-01-15
    assert row(value_ref, APR, "V01")["pv_tenure"] == pytest.approx(100 * math.log(2.25) / math.log(6), abs=1e-12)


def test_growth_scores_against_the_three_months_before(value_ref):
    v01 = {m: row(value_ref, m, "V01") for m in (JAN, FEB, MAR, APR)}
    assert v01[JAN]["pv_revenue_growth"] == 50.0 and v01[JAN]["pv_data_growth"] == 50.0  # no prior
    # Feb: 3000 against 6000 -> ln(4000/7000)/ln 2 = -0.8074 -> 9.63
    assert v01[FEB]["pv_revenue_growth"] == pytest.approx(50 + 50 * math.log(4 / 7) / math.log(2), abs=1e-12)
    assert v01[FEB]["pv_data_growth"] == 50.0  # 0 MB against 0 MB
    assert v01[MAR]["pv_data_growth"] == 100.0  # (2048 + 100) / (0 + 100): clipped
    # Apr: 3000 against the mean of 6000, 3000, 3000 = 4000 -> ln(4000/5000)/ln 2 = -0.3219 -> 33.90
    assert v01[APR]["pv_revenue_growth"] == pytest.approx(33.903595, abs=1e-6)
    assert v01[APR]["pv_data_growth"] == 0.0  # 0 MB against 682.7 MB: clipped


def test_indices_and_segment(value_ref):
    r = row(value_ref, APR, "V01")
    # current: revenue 100 ln 1.6/ln 7 = 24.1534 (arpu_3m 3000), margin 100 ln(1 + 1792.78/3000)/ln(23/3) =
    # 23.0008, payment 23.3333 -> 0.5 x 24.1534 + 0.3 x 23.0008 + 0.2 x 23.3333 = 23.6436
    assert r["current_value_index"] == 23.64
    # potential: 0.15 x 33.9036 (revenue growth) + 0.15 x 0 (data growth) + 0.10 x 45.2589 (tenure)
    # + 0.15 x 0 (adoption) + 0.10 x 100 (5G) + 0.10 x 100 (age 30) + 0 (no contacts) = 29.6114
    assert r["potential_value_index"] == 29.61
    assert r["value_segment"] == "LOW_VALUE"
    # V04 in March: potential 0.15 x 50 + 0.15 x 100 + 0.10 x 100 ln(13/12)/ln 6 (= 4.4673) + 0.15 x 100
    # + 0.10 x 0 + 0.10 x 20 = 39.9467; current low (ARPU 10 CNY)
    v04 = row(value_ref, MAR, "V04")
    assert v04["potential_value_index"] == 39.95 and v04["value_segment"] == "LOW_VALUE"


def test_value_segment_is_a_kpi_dimension(value_ref):
    k = value_ref.kpi_month
    seg = k[k["dimension"] == "value_segment"].groupby("month")["active_subscribers"].sum()
    assert seg.to_dict() == {JAN: 3, FEB: 4, MAR: 4, APR: 4}


def test_value_landing_migration_and_summary(value_ref):
    mig = value_ref.segment_migration
    jan = mig[mig["month"] == JAN]
    assert set(jan["from_segment"]) == {"UNKNOWN"} and jan["subscribers"].sum() == 3  # the first month
    feb_new = mig[(mig["month"] == FEB) & (mig["from_segment"] == "NEW")]
    assert feb_new["subscribers"].tolist() == [1] and feb_new["revenue_fen"].tolist() == [1000]  # V04
    churned = mig[(mig["month"] == APR) & (mig["to_segment"] == "CHURNED")]
    assert churned[["from_segment", "subscribers", "revenue_fen"]].values.tolist() == [["LOW_VALUE", 1, 500]]
    summary = value_ref.segment_summary
    assert summary.groupby("month")["value_segment"].apply(list).tolist() == [list(SEGMENTS)] * 4
    assert summary.groupby("month")["subscribers"].sum().to_dict() == {JAN: 3, FEB: 4, MAR: 4, APR: 4}


def test_value_landing_key_account(value_ref):
    ka = value_ref.key_account_month.set_index("month")
    assert list(ka["group_id"]) == ["G1"] * 4 and list(ka["lines"]) == [2] * 4
    assert math.isnan(ka.loc[MAR, "revenue_change_3m"])  # December has not been built
    # April against January: (3000 + 1000) / (6000 + 4000) - 1 = -0.6 -> decline penalty min(30, 60) = 30
    apr = ka.loc[APR]
    assert apr["revenue_change_3m"] == pytest.approx(-0.6, abs=1e-15)
    assert (apr["decline_penalty"], apr["churn_penalty"], apr["complaint_penalty"], apr["health_score"]) == (
        30.0, 0.0, 0.0, 70.0)
    assert apr["revenue_share"] == pytest.approx(4000 / 6500, abs=1e-15)  # of 3000 + 1000 + 2000 + 500


def test_main_landing_value_inputs(ref):
    # S05 (prepaid) tops up in January only
    got = [row(ref, m, "S05")["cv_payment"] for m in (JAN, FEB, MAR, APR)]
    assert got == pytest.approx([100.0, 50.0, 100 / 3, 0.0])
    # S01 talks to one ON_NET number in January; S01's margin: 5000 - (1000 + 5 min)
    s01 = row(ref, JAN, "S01")
    assert (s01["pv_on_net_share"], s01["margin_fen"]) == (100.0, 3995.0)
    assert s01["pv_calling_circle"] == pytest.approx(100 * math.log(1.1) / math.log(7), abs=1e-12)


# --------------------------------------------------------------------------------------------
# Monthly value tables on hand-made subscriber-month rows
# --------------------------------------------------------------------------------------------


def months_rows(*rows: dict) -> pd.DataFrame:
    """Subscriber-month rows with defaults for the columns a test does not care about."""
    defaults = dict(group_id=None, opening=True, closing=True, gross_add=False, churned_in_month=False,
                    complaint_count=0, revenue_fen=0, value_segment="LOW_VALUE", current_value_index=0.0,
                    potential_value_index=0.0)
    return pd.DataFrame([{**defaults, **r} for r in rows])


def test_segment_migration_from_new_unknown_and_to_churned():
    sm = months_rows(
        dict(month=JAN, subscriber_id="A", value_segment="VALUABLE", revenue_fen=100),  # Jan: first month
        dict(month=JAN, subscriber_id="B", gross_add=True, revenue_fen=10),
        dict(month=FEB, subscriber_id="A", value_segment="POTENTIAL", revenue_fen=200),
        dict(month=FEB, subscriber_id="B", churned_in_month=True, closing=False, revenue_fen=20),
        dict(month=FEB, subscriber_id="C", gross_add=True, churned_in_month=True, closing=False, revenue_fen=5),
        dict(month=FEB, subscriber_id="D", value_segment="SUB_VALUABLE", revenue_fen=40),  # no January row
        dict(month=MAR, subscriber_id="A", value_segment="POTENTIAL", revenue_fen=300),
        dict(month=MAR, subscriber_id="D", value_segment="VALUABLE", revenue_fen=50),
        dict(month=MAR, subscriber_id="E", value_segment="VALUABLE", revenue_fen=60),  # not added, no Feb row
    )
    got = segment_migrations(sm).values.tolist()
    assert got == [
        [JAN, "NEW", "LOW_VALUE", 1, 10],
        [JAN, "UNKNOWN", "VALUABLE", 1, 100],
        [FEB, "LOW_VALUE", "CHURNED", 1, 20],  # B: its January segment, churned
        [FEB, "NEW", "CHURNED", 1, 5],  # C: added and churned in February
        [FEB, "UNKNOWN", "SUB_VALUABLE", 1, 40],
        [FEB, "VALUABLE", "POTENTIAL", 1, 200],
        [MAR, "POTENTIAL", "POTENTIAL", 1, 300],
        [MAR, "SUB_VALUABLE", "VALUABLE", 1, 50],
        [MAR, "UNKNOWN", "VALUABLE", 1, 60],
    ]


def test_gini_top20_and_lorenz_of_a_tiny_month():
    # revenues 600, 300, 100, 0, -500: x = 0, 0, 100, 300, 600 (negative as 0), n = 5, total 1000
    revenues = [600, 300, 100, 0, -500]
    top20, gini = concentration(revenues)
    assert top20 == 0.6  # ceil(0.2 x 5) = 1 largest: 600 / 1000
    # sum i x_(i) = 3 x 100 + 4 x 300 + 5 x 600 = 4500 -> 2 x 4500 / (5 x 1000) - 6/5 = 1.8 - 1.2
    assert gini == pytest.approx(0.6, abs=1e-15)
    points = {p: (pop, share) for p, pop, share in lorenz(revenues)}
    assert len(points) == 101
    # i = floor(5 p / 100): p 0 -> 0; 20 -> 1; 50 -> 2; 60 -> 3 (0 + 0 + 100); 80 -> 4; 99 -> 4; 100 -> 5
    assert points[0] == (0.0, 0.0) and points[20] == (0.2, 0.0) and points[50] == (0.4, 0.0)
    assert points[60] == (0.6, 0.1) and points[80] == (0.8, 0.4) and points[99] == (0.8, 0.4)
    assert points[100] == (1.0, 1.0)
    # six equal revenues: no inequality; the top ceil(1.2) = 2 hold 2/6
    top20, gini = concentration([100] * 6)
    assert top20 == pytest.approx(1 / 3, abs=1e-15) and gini == pytest.approx(0.0, abs=1e-15)
    top20, gini = concentration([0, -5])
    assert math.isnan(top20) and math.isnan(gini)


def test_revenue_concentration_tables_per_month():
    jan = [dict(month=JAN, subscriber_id=f"S{i}", revenue_fen=v) for i, v in enumerate([600, 300, 100, 0, -500])]
    sm = months_rows(*jan, dict(month=FEB, subscriber_id="S0", revenue_fen=0))
    conc, lor = revenue_concentrations(sm)
    assert conc.values.tolist()[0] == [JAN, 0.6, pytest.approx(0.6, abs=1e-15), 5]
    assert conc["month"].tolist() == [JAN, FEB]
    assert math.isnan(conc.iloc[1]["gini"]) and conc.iloc[1]["subscribers"] == 1  # February: all revenue 0
    assert len(lor) == 202 and lor[lor["month"] == FEB]["revenue_share"].isna().all()


def test_key_account_health_score():
    built = [202601, 202602, 202603, 202604]
    rows = []
    # G1, the example of docs/value.md: 50 lines, 2 churned in April (4 %: 20 points), revenue 100000 in January
    # and 90000 in April (-10 %: 10 points), 3 complaints (2 x 3/50 x 100 = 12 points) -> 58
    rows += [dict(month=JAN, subscriber_id=f"G1-{i}", group_id="G1", revenue_fen=2000) for i in range(50)]
    rows += [dict(month=APR, subscriber_id=f"G1-{i}", group_id="G1", revenue_fen=1800, churned_in_month=i < 2,
                  closing=i >= 2, complaint_count=3 if i == 10 else 0) for i in range(50)]
    # G2: 4 lines, 1 churned (125 -> capped 40), 10 complaints (500 -> capped 30), no revenue in January (change
    # NULL, no decline penalty) -> 30
    rows += [dict(month=JAN, subscriber_id=f"G2-{i}", group_id="G2", revenue_fen=0) for i in range(4)]
    rows += [dict(month=APR, subscriber_id=f"G2-{i}", group_id="G2", revenue_fen=500, churned_in_month=i == 0,
                  closing=i != 0, complaint_count=10 if i == 0 else 0) for i in range(4)]
    # G3: revenue halved (-50 % -> capped 30) -> 70
    rows += [dict(month=JAN, subscriber_id="G3-0", group_id="G3", revenue_fen=1000),
             dict(month=APR, subscriber_id="G3-0", group_id="G3", revenue_fen=500)]
    # a line without a group: in the month's total revenue (90000 + 2000 + 500 + 7500 = 100000), no key account
    rows += [dict(month=APR, subscriber_id="X", revenue_fen=7500)]
    ka = key_account_months(months_rows(*rows), CONFIG, built)
    apr = ka[ka["month"] == APR].set_index("group_id")
    assert list(apr.index) == ["G1", "G2", "G3"]
    g1 = apr.loc["G1"]
    assert (g1["lines"], g1["active_lines"], g1["revenue_fen"], g1["churned_lines"], g1["complaint_count"]) == (
        50, 48, 90000, 2, 3)
    assert g1["revenue_share"] == 0.9 and g1["revenue_change_3m"] == pytest.approx(-0.1, abs=1e-15)
    assert g1[["churn_penalty", "decline_penalty", "complaint_penalty"]].tolist() == pytest.approx([20.0, 10.0, 12.0])
    assert g1["health_score"] == 58.0
    assert math.isnan(apr.loc["G2", "revenue_change_3m"])
    assert apr.loc["G2", ["churn_penalty", "decline_penalty", "complaint_penalty", "health_score"]].tolist() == [
        40.0, 0.0, 30.0, 30.0]
    assert apr.loc["G3", ["decline_penalty", "health_score"]].tolist() == [30.0, 70.0]
    # January was not built: no change, no decline penalty -> G1 scores 100 - 20 - 12 = 68
    unbuilt = key_account_months(months_rows(*rows), CONFIG, built[1:]).set_index(["month", "group_id"])
    assert math.isnan(unbuilt.loc[(APR, "G1"), "revenue_change_3m"])
    assert unbuilt.loc[(APR, "G1"), "health_score"] == 68.0


def test_segment_summary():
    sm = months_rows(
        dict(month=JAN, subscriber_id="A", revenue_fen=4000),
        dict(month=JAN, subscriber_id="B", revenue_fen=1000),
        # February: A and B are VALUABLE (revenue 6000 and 1000 against priors 4000 and 1000), C is new
        dict(month=FEB, subscriber_id="A", value_segment="VALUABLE", revenue_fen=6000, current_value_index=70.0,
             potential_value_index=60.5),
        dict(month=FEB, subscriber_id="B", value_segment="VALUABLE", revenue_fen=1000, current_value_index=51.25,
             potential_value_index=50.0, closing=False, churned_in_month=True),
        dict(month=FEB, subscriber_id="C", value_segment="POTENTIAL", revenue_fen=3000, opening=False, gross_add=True),
    )
    summary = segment_summaries(sm, CONFIG)
    feb = summary[summary["month"] == FEB].set_index("value_segment")
    assert list(feb.index) == ["VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE"]
    v = feb.loc["VALUABLE"]
    assert (v["subscribers"], v["revenue_fen"]) == (2, 7000)
    assert v["revenue_share"] == 0.7  # of 10000
    assert v["arpu_fen"] == 4666.67  # 7000 / ((2 + 1) / 2)
    assert v["avg_current_value_index"] == 60.625 and v["avg_potential_value_index"] == 55.25
    assert v["revenue_growth"] == pytest.approx(0.4, abs=1e-15)  # (6000 + 1000) / (4000 + 1000) - 1
    assert v["recommended_strategy"] == CONFIG["segment_strategies"]["VALUABLE"]
    p = feb.loc["POTENTIAL"]
    assert p["arpu_fen"] == 6000.0 and math.isnan(p["revenue_growth"])  # 3000 / ((0 + 1) / 2); C has no prior
    s = feb.loc["SUB_VALUABLE"]
    assert (s["subscribers"], s["revenue_fen"]) == (0, 0)
    assert math.isnan(s["arpu_fen"]) and math.isnan(s["avg_current_value_index"]) and s["revenue_share"] == 0.0


# --------------------------------------------------------------------------------------------
# CLV given the sBG parameters
# --------------------------------------------------------------------------------------------


def clv_config(annual_rate: float, horizon: int | None) -> dict:
    return {"clv": {"annual_discount_rate": annual_rate, "horizon_months": horizon,
                    "cohort_groups": ["payment_type", "value_segment"]}}


def test_clv_given_model():
    sm = pd.DataFrame([
        # month, subscriber, payment type, segment, margin_3m, tenure, status at month end, churned
        (FEB, "A", "POSTPAID", "VALUABLE", 1200.0, 0, "ACTIVE", False),
        (FEB, "B", "POSTPAID", "VALUABLE", 600.0, 1, "SUSPENDED", False),
        (FEB, "C", "POSTPAID", "VALUABLE", -600.0, 1, "ACTIVE", False),
        (FEB, "D", "POSTPAID", "VALUABLE", 600.0, 1, "TERMINATED", True),
        (FEB, "E", "PREPAID", "VALUABLE", 600.0, 1, "ACTIVE", False),  # no parameters for PREPAID|VALUABLE
        (JAN, "A", "POSTPAID", "VALUABLE", 600.0, 1, "ACTIVE", False),  # no parameters in January
        (JAN, "F", "POSTPAID", "VALUABLE", 600.0, 1, "TERMINATED", True),
    ], columns=["month", "subscriber_id", "payment_type", "value_segment", "margin_3m_fen", "tenure_months",
                "status_at_month_end", "churned_in_month"])
    model = pd.DataFrame({"month": [pd.Timestamp(FEB)], "cohort_group": ["POSTPAID|VALUABLE"], "alpha": [1.0],
                          "beta": [1.0]})
    # alpha = beta = 1: S(n+1)/S(n) = (1+n)/(2+n). No discount, 2 months: at n = 0, 1/2 + 1/2 x 2/3 = 5/6
    # (x 1200 = 1000); at n = 1, 2/3 + 2/3 x 3/4 = 7/6 (x 600 = 700; x -600 = -700)
    got = clv_given_model(sm, model, clv_config(0.0, 2))
    assert got["clv_fen"].tolist() == [1000, 700, -700, 0, None, None, 0]
    # no horizon, (1 + d) = 2 a month: at n = 0, sum_k 1/(k+1) 2^-k = 2 (ln 2 - 1/2) = 0.38629 (x 1000 = 386)
    one = sm.iloc[[0]].assign(margin_3m_fen=1000.0)
    assert clv_given_model(one, model, clv_config(2.0 ** 12 - 1, None))["clv_fen"].tolist() == [386]
    assert clv_given_model(one, model, clv_config(2.0 ** 12 - 1, None))["clv_unrounded"].iloc[0] == pytest.approx(
        1000 * (2 * math.log(2) - 1), rel=1e-12)
