"""Specification of the synthetic BOSS-export generator (``crm generate``).

Everything is checked from the files on disk, in plain Python, against boss-exports.md and the
targets in docs/generator.md; nothing reads generator internals.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from crm_pipeline.cli import build_parser
from crm_pipeline.generate import REASONS, GeneratorConfig, generate

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (REPO / "schemas" / "feeds").glob("*.json")}
DAILY_FEEDS = ("subscriber", "plan", "cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket", "survey")
EVENT_FEEDS = ("cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket", "survey")
CDR_FEEDS = ("cdr_voice", "cdr_sms", "cdr_data")
CJK = re.compile("[\u4e00-\u9fff]")

SMALL = dict(subscribers=300, start=date(2024, 3, 1), days=12, seed=11, max_rows_per_file=2500,
             dup_rate=0.01, bad_rate=0.002, survey_rate=0.02, ticket_rate=0.6)
STATS = dict(subscribers=3000, start=date(2024, 1, 1), days=63, seed=42)


# ---------------------------------------------------------------------------- reading helpers
def fields_of(feed):
    return [f["name"] for f in SCHEMAS[feed]["fields"]]


def deliveries(root: Path, feed: str):
    """(business date, [(file name, raw bytes as delivered, ctl row count, size, md5, encoding)])."""
    folder = root / feed
    if not folder.exists():
        return
    for day_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        ctl = day_dir / f"{feed.upper()}_{day_dir.name}.ctl"
        files = []
        for line in ctl.read_text(encoding="ascii").splitlines():
            name, rows, size, md5, enc = line.split("|")
            files.append((name, (day_dir / name).read_bytes(), int(rows), int(size), md5, enc))
        yield day_dir.name, files


def raw_lines(name: str, raw: bytes) -> list[bytes]:
    data = gzip.decompress(raw) if name.endswith(".gz") else raw
    return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n") if line]


def read_feed(root: Path, feed: str):
    """Yield (business date, file name, 1-based line number, decoded text or None, raw bytes)."""
    for bd, files in deliveries(root, feed):
        for name, raw, _, _, _, enc in files:
            codec = "gbk" if enc == "GBK" else "utf-8"
            for no, line in enumerate(raw_lines(name, raw), 1):
                try:
                    text = line.decode(codec)
                except UnicodeDecodeError:
                    text = None
                yield bd, name, no, text, line


def ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def norm_msisdn(value: str) -> str:
    if value.startswith("+86"):
        return value[3:]
    if value.startswith("86") and len(value) == 13:
        return value[2:]
    return value


class Snapshots:
    """Subscriber snapshots by business date."""

    def __init__(self, root: Path):
        self.rows: dict[str, list[list[str]]] = {}
        for bd, _, _, text, _ in read_feed(root, "subscriber"):
            self.rows.setdefault(bd, []).append(text.split("|"))
        self.dates = sorted(self.rows)
        self.holder: dict[str, dict[str, str]] = {}
        for bd, rows in self.rows.items():
            self.holder[bd] = {r[1]: r[0] for r in rows if r[15] in ("ACTIVE", "SUSPENDED")}
            for r in rows:  # a line terminated that very day still owns its records of the day
                if r[15] == "TERMINATED" and r[16] == bd and r[1] not in self.holder[bd]:
                    self.holder[bd][r[1]] = r[0]

    def active(self, bd: str) -> dict[str, list[str]]:
        return {r[0]: r for r in self.rows[bd] if r[15] in ("ACTIVE", "SUSPENDED")}


# ---------------------------------------------------------------------------- a spec validator
def _valid_ts(value: str) -> bool:
    if not re.fullmatch(r"\d{14}", value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def _valid_date(value: str) -> bool:
    if not re.fullmatch(r"\d{8}", value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def defects(feed: str, bd: str, text: str | None, snaps: Snapshots) -> set[str]:
    """Every contract rule a line breaks (empty set for a good line)."""
    if text is None:
        return {"bad_encoding"}
    schema = SCHEMAS[feed]
    values = text.split("|")
    if len(values) != len(schema["fields"]):
        return {"field_count"}
    found = set()
    rec = dict(zip(fields_of(feed), values))
    for spec, value in zip(schema["fields"], values):
        typ = spec["type"]
        if value == "":
            if not spec.get("nullable", False):
                found.add("missing_value")
            continue
        if typ in ("long", "int"):
            if not re.fullmatch(r"-?\d+", value):
                found.add("bad_number")
                continue
            if "min" in spec and int(value) < spec["min"] or "max" in spec and int(value) > spec["max"]:
                found.add("out_of_range")
        elif typ == "timestamp" and not _valid_ts(value):
            found.add("bad_timestamp")
        elif typ == "date" and not _valid_date(value):
            found.add("bad_timestamp")
        elif typ == "msisdn" and not re.fullmatch(r"1\d{10}", norm_msisdn(value)):
            found.add("bad_msisdn")
        if "allowed" in spec and value not in spec["allowed"]:
            found.add("bad_code")
    event_field = schema.get("event_time")
    if event_field and not found & {"bad_timestamp", "missing_value"}:
        event = rec[event_field]
        # a re-delivered ticket is judged by its last change (docs/ingest.md)
        last_change = rec.get("resolved_time") or event
        event_day = datetime.strptime(last_change[:8], "%Y%m%d").date()
        business = datetime.strptime(bd, "%Y%m%d").date()
        if not business - timedelta(days=3) <= event_day < business + timedelta(days=1):
            found.add("outside_window")
        elif schema.get("msisdn_field") and "bad_msisdn" not in found:
            holder = snaps.holder.get(event[:8], {})
            if norm_msisdn(rec[schema["msisdn_field"]]) not in holder:
                found.add("unknown_subscriber")
    return found


# ---------------------------------------------------------------------------- fixtures
def make(root: Path, **options) -> Path:
    generate(GeneratorConfig(landing=root, **options))
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("small") / "landing", **SMALL)


@pytest.fixture(scope="module")
def small_truth(small) -> dict:
    return json.loads((small / "_generator" / "truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def small_snaps(small) -> Snapshots:
    return Snapshots(small)


@pytest.fixture(scope="module")
def stats(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("stats") / "landing", **STATS)


@pytest.fixture(scope="module")
def stats_snaps(stats) -> Snapshots:
    return Snapshots(stats)


@pytest.fixture(scope="module")
def stats_usage(stats, stats_snaps):
    """Distinct well-formed CDRs per feed and event day; for the second half of January also per
    subscriber and day (voice calls, calls to CUCC/CTCC, data sessions)."""
    per_day = {feed: Counter() for feed in CDR_FEEDS}
    calls, offnet, sessions = Counter(), Counter(), Counter()
    for feed in CDR_FEEDS:
        names = fields_of(feed)
        n_fields = len(names)
        i_msisdn = names.index("msisdn")
        i_time = names.index("start_time" if "start_time" in names else "event_time")
        i_op = names.index("other_operator") if "other_operator" in names else None
        seen = set()
        counts = per_day[feed]
        for _, files in deliveries(stats, feed):
            for name, raw, _, _, _, enc in files:
                data = gzip.decompress(raw) if name.endswith(".gz") else raw
                for line in data.decode(enc.lower(), errors="replace").splitlines():
                    v = line.split("|")
                    if len(v) != n_fields or v[0] in seen or "\ufffd" in line:
                        continue
                    seen.add(v[0])
                    day = v[i_time][:8]
                    counts[day] += 1
                    if feed == "cdr_sms" or not "20240115" <= day <= "20240131":
                        continue
                    sub = stats_snaps.holder.get(day, {}).get(norm_msisdn(v[i_msisdn]))
                    if feed == "cdr_data":
                        sessions[(sub, day)] += 1
                    else:
                        calls[(sub, day)] += 1
                        offnet[(sub, day)] += v[i_op] in ("CUCC", "CTCC")
    return per_day, sessions, calls, offnet


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- interface
def test_crm_generate_command_line_builds_the_config_with_documented_defaults():
    args = build_parser().parse_args(["generate", "--landing", "/tmp/x", "--subscribers", "100",
                                      "--start", "2024-01-01", "--days", "3"])
    from crm_pipeline.generate import config_from_args

    config = config_from_args(args)
    assert (config.seed, config.voice_per_day, config.sms_per_day, config.data_per_day) == (42, 5.0, 2.0, 10.0)
    assert (config.prepaid_churn, config.postpaid_churn) == (0.028, 0.009)
    assert config.max_rows_per_file == 200_000 and config.start == date(2024, 1, 1)


def test_invalid_options_are_rejected_with_the_option_named():
    with pytest.raises(ValueError, match="late_rate"):
        GeneratorConfig(landing=Path("x"), subscribers=100, start=date(2024, 1, 1), days=3, late_rate=1.5)


# ---------------------------------------------------------------------------- determinism
def test_same_seed_and_options_give_byte_identical_files(small, tmp_path):
    again = make(tmp_path / "again", **SMALL)
    assert tree(again) == tree(small)


def test_another_seed_gives_different_files(small, tmp_path):
    other = make(tmp_path / "other", **dict(SMALL, seed=12))
    first, second = tree(small), tree(other)
    same = [k for k in first if k.endswith((".dat", ".gz")) and first[k] == second.get(k)]
    assert len(same) < len(first) / 4


# ---------------------------------------------------------------------------- contract
def test_control_files_match_their_data_files(small):
    checked = 0
    for feed in DAILY_FEEDS + ("bill",):
        for bd, files in deliveries(small, feed):
            for name, raw, rows, size, md5, enc in files:
                assert name.startswith(f"{feed.upper()}_{bd}_") and re.fullmatch(r".*_\d{3}\.dat(\.gz)?", name)
                assert len(raw) == size, (feed, bd, name)
                assert hashlib.md5(raw).hexdigest() == md5, (feed, bd, name)
                assert len(raw_lines(name, raw)) == rows, (feed, bd, name)
                assert enc in ("UTF-8", "GBK")
                checked += 1
    assert checked > 100


def test_every_daily_feed_is_delivered_every_business_day(small):
    days = [ymd(SMALL["start"] + timedelta(days=i)) for i in range(SMALL["days"])]
    for feed in DAILY_FEEDS:
        delivered = [p.name for p in sorted((small / feed).iterdir())]
        assert delivered == days, feed
        for day in days:
            assert (small / feed / day / f"{feed.upper()}_{day}.ctl").is_file()


def test_good_lines_break_no_rule_and_bad_lines_break_exactly_their_planted_rule(small, small_truth, small_snaps):
    planted = {(r["file"], r["line"]): r for r in small_truth["bad_records"]}
    seen_bad = 0
    for feed in EVENT_FEEDS:
        for bd, name, no, text, raw in read_feed(small, feed):
            found = defects(feed, bd, text, small_snaps)
            record = planted.get((f"{feed}/{bd}/{name}", no))
            if record is None:
                assert found == set(), (feed, bd, name, no, raw)
            else:
                seen_bad += 1
                assert found == {record["reason"]}, (record, raw)
                assert raw.split(b"|")[0].decode() == record["id"]
    assert seen_bad == len(planted)


def test_snapshot_and_bill_lines_have_the_schema_field_count(small, stats):
    for root, feed in ((small, "subscriber"), (small, "plan"), (stats, "bill")):
        n = len(fields_of(feed))
        for bd, name, no, text, _ in read_feed(root, feed):
            assert text is not None and len(text.split("|")) == n, (feed, bd, name, no)


def test_gbk_deliveries_decode_as_gbk_and_contain_chinese(small):
    gbk_files = 0
    for feed in ("subscriber", "plan"):
        for _, files in deliveries(small, feed):
            for name, raw, _, _, _, enc in files:
                if enc == "GBK":
                    lines = raw_lines(name, raw)
                    text = b"\n".join(lines).decode("gbk")
                    assert CJK.search(text), name
                    # no GBK trail byte may look like the separator
                    assert all(line.count(b"|") == len(fields_of(feed)) - 1 for line in lines), name
                    gbk_files += 1
    assert gbk_files >= 2


def test_customer_names_are_mostly_chinese(small_snaps):
    names = [r[5] for r in small_snaps.rows[small_snaps.dates[-1]]]
    assert sum(bool(CJK.search(n)) for n in names) / len(names) > 0.8


def test_deliveries_include_gzip_crlf_empty_and_split_files(small):
    kinds = Counter()
    for feed in DAILY_FEEDS:
        for _, files in deliveries(small, feed):
            if len(files) > 1:
                kinds["split"] += 1
            for name, raw, rows, _, _, _ in files:
                data = gzip.decompress(raw) if name.endswith(".gz") else raw
                kinds["gz"] += name.endswith(".gz")
                kinds["crlf"] += b"\r\n" in data
                kinds["empty"] += rows == 0 and raw == b""
    assert kinds["gz"] and kinds["crlf"] and kinds["empty"] and kinds["split"], kinds


def test_every_reason_code_is_planted_at_least_once(small_truth):
    counts = Counter()
    for feed in small_truth["feeds"].values():
        counts.update(feed["bad"])
    assert set(small_truth["reason_codes"]) == set(REASONS)
    assert all(counts[r] >= 1 for r in REASONS), counts
    assert sum(counts.values()) == len(small_truth["bad_records"])


def test_truth_line_accounting_adds_up(small, small_truth):
    for feed in EVENT_FEEDS:
        t = small_truth["feeds"][feed]
        written = sum(1 for _ in read_feed(small, feed))
        assert written == t["lines_written"]
        assert written == t["good_records"] + t["duplicates"] + t["updates"] + t["bad_total"], feed


def test_duplicates_are_exact_resends_and_ticket_updates_fill_the_resolution(small, small_truth):
    for feed in EVENT_FEEDS:
        planted_bad = {r["id"] for r in small_truth["bad_records"] if r["feed"] == feed}
        versions: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for bd, _, _, text, raw in read_feed(small, feed):
            key = raw.split(b"|")[0].decode("utf-8", "replace")
            if key not in planted_bad:
                versions[key].append((bd, text))
        dups = sum(len(v) - len({t for _, t in v}) for v in versions.values())
        changed = [v for v in versions.values() if len({t for _, t in v}) > 1]
        assert dups == small_truth["feeds"][feed]["duplicates"], feed
        if feed != "ticket":
            assert not changed, feed
            continue
        assert len(changed) == small_truth["feeds"]["ticket"]["updates"] > 0
        resolved, satisfaction = fields_of("ticket").index("resolved_time"), fields_of("ticket").index("satisfaction")
        for v in changed:
            first, last = sorted(v)[0][1].split("|"), sorted(v)[-1][1].split("|")
            assert first[resolved] == first[satisfaction] == ""
            assert last[resolved] and last[satisfaction]


def test_late_cdrs_keep_their_event_day_and_arrive_within_three_days(small, small_truth):
    for feed in CDR_FEEDS:
        i_time = 4 if feed != "cdr_data" else 2
        first_delivery: dict[str, tuple[str, str]] = {}
        bad = {r["id"] for r in small_truth["bad_records"]}
        for bd, _, _, text, _ in read_feed(small, feed):
            if text is None:
                continue
            v = text.split("|")
            if v[0] not in bad and v[0] not in first_delivery:
                first_delivery[v[0]] = (bd, v[i_time][:8])
        late = [(bd, ev) for bd, ev in first_delivery.values() if bd != ev]
        assert all(0 < (datetime.strptime(bd, "%Y%m%d") - datetime.strptime(ev, "%Y%m%d")).days <= 3
                   for bd, ev in late)
        assert len(late) == small_truth["feeds"][feed]["late"] > 0


def test_a_number_belongs_to_at_most_one_live_subscription(small_snaps, stats_snaps):
    for snaps in (small_snaps, stats_snaps):
        for bd in snaps.dates:
            live = Counter(r[1] for r in snaps.rows[bd] if r[15] != "TERMINATED")
            assert not [m for m, c in live.items() if c > 1], bd


def test_reassigned_numbers_appear_with_the_old_subscription_terminated(stats_snaps):
    last = stats_snaps.rows[stats_snaps.dates[-1]]
    by_number = defaultdict(list)
    for r in last:
        by_number[r[1]].append(r)
    reused = [rows for rows in by_number.values() if len(rows) > 1]
    assert reused
    for rows in reused:
        old = [r for r in rows if r[15] == "TERMINATED"]
        new = [r for r in rows if r[15] != "TERMINATED"]
        assert len(old) >= 1 and len(new) <= 1
        if new:
            released = max(datetime.strptime(r[16], "%Y%m%d") for r in old)
            assert (datetime.strptime(new[0][14], "%Y%m%d") - released).days >= 30


def test_snapshot_keeps_terminated_lines_with_reason_and_status_date(stats_snaps):
    rows = stats_snaps.rows[stats_snaps.dates[-1]]
    terminated = [r for r in rows if r[15] == "TERMINATED"]
    assert terminated and all(r[17] in ("VOLUNTARY", "NON_PAYMENT", "PORT_OUT", "OTHER") for r in terminated)
    assert all(r[17] == "" for r in rows if r[15] != "TERMINATED")
    assert {r[17] for r in terminated} >= {"VOLUNTARY", "PORT_OUT", "NON_PAYMENT"}
    assert any(r[15] == "SUSPENDED" for r in rows)
    assert Counter(r[13] for r in rows if r[15] != "TERMINATED").keys() >= {"4G", "5G"}


# ---------------------------------------------------------------------------- statistics
def bills_latest(root: Path) -> dict[str, dict[str, list[str]]]:
    """bill_month -> bill_line_id -> fields, the latest delivery winning."""
    out: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for _, _, _, text, _ in read_feed(root, "bill"):  # deliveries come in date order
        v = text.split("|")
        out[v[3]][v[0]] = v
    return out


def complete_months(snaps: Snapshots) -> list[str]:
    months = sorted({d[:6] for d in snaps.dates})
    return [m for m in months
            if sum(d[:6] == m for d in snaps.dates) == calendar.monthrange(int(m[:4]), int(m[4:]))[1]]


def test_top_20_percent_of_subscribers_bring_57_to_68_percent_of_bill_revenue(stats):
    bills = bills_latest(stats)
    assert len(bills) == 2
    for month, lines in bills.items():
        revenue = Counter()
        for v in lines.values():
            revenue[v[2]] += int(v[5])
        values = sorted((max(x, 0) for x in revenue.values()), reverse=True)
        share = sum(values[: len(values) // 5]) / sum(values)
        assert 0.57 <= share <= 0.68, (month, share)


def test_every_subscription_active_in_the_month_has_a_bill_and_only_those(stats, stats_snaps):
    bills = bills_latest(stats)
    for month in complete_months(stats_snaps):
        days = [d for d in stats_snaps.dates if d[:6] == month]
        before = [d for d in stats_snaps.dates if d < days[0]]
        opening = set(stats_snaps.active(before[-1] if before else days[0]))
        added = {r[0] for r in stats_snaps.rows[days[-1]] if r[14][:6] == month}
        billed = {v[2] for v in bills[month].values()}
        assert billed == opening | added, month
        items = Counter(v[4] for v in bills[month].values())
        assert items["MONTHLY_FEE"] == len(billed)
        assert {"VOICE", "SMS", "DATA", "VAS", "ROAMING", "DISCOUNT"} <= set(items)


def test_truth_lists_exactly_the_delivered_bill_months(stats):
    truth = json.loads((stats / "_generator" / "truth.json").read_text(encoding="utf-8"))
    assert [(b["bill_month"], b["delivered"]) for b in truth["bills"]] == [("202401", "20240202"),
                                                                          ("202402", "20240302")]
    assert truth["bill_correction"]["bill_month"] == "202401" and truth["bill_correction"]["changed"]


def test_first_bill_month_is_re_delivered_with_the_same_ids_and_a_few_amounts_changed(stats):
    by_delivery: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for bd, _, _, text, _ in read_feed(stats, "bill"):
        v = text.split("|")
        by_delivery[bd][v[0]] = v
    assert sorted(by_delivery) == ["20240202", "20240210", "20240302"]
    first, corrected = by_delivery["20240202"], by_delivery["20240210"]
    assert first.keys() == corrected.keys()
    changed = [k for k in first if first[k][5] != corrected[k][5]]
    assert 0 < len(changed) < len(first) * 0.05


def test_monthly_churn_per_payment_type_is_within_three_sigma_of_the_configured_rate(stats_snaps):
    rates = {"PREPAID": 0.028, "POSTPAID": 0.009}
    months = complete_months(stats_snaps)
    assert len(months) == 2
    for month in months:
        days = [d for d in stats_snaps.dates if d[:6] == month]
        before = [d for d in stats_snaps.dates if d < days[0]]
        opening = stats_snaps.active(before[-1] if before else days[0])
        end = {r[0]: r for r in stats_snaps.rows[days[-1]]}
        for pt, rate in rates.items():
            base = [s for s, r in opening.items() if r[12] == pt]
            churned = sum(1 for s in base if end[s][15] == "TERMINATED" and end[s][16][:6] == month)
            n = len(base)
            assert abs(churned - rate * n) <= 3 * math.sqrt(n * rate * (1 - rate)), (month, pt, churned, n)


def test_cdr_records_per_active_subscriber_day_match_the_configured_means(stats_snaps, stats_usage):
    per_day = stats_usage[0]
    active_days = sum(len(stats_snaps.active(d)) for d in stats_snaps.dates)
    for feed, mean in (("cdr_voice", 5.0), ("cdr_sms", 2.0), ("cdr_data", 10.0)):
        observed = sum(per_day[feed][d] for d in stats_snaps.dates) / active_days
        assert abs(observed / mean - 1) <= 0.10, (feed, observed)


def test_leavers_use_less_and_call_other_operators_more_before_they_terminate(stats_snaps, stats_usage):
    _, sessions, calls, offnet = stats_usage
    last = {r[0]: r for r in stats_snaps.rows[stats_snaps.dates[-1]]}
    leavers = {s for s, r in last.items() if r[15] == "TERMINATED" and r[16] >= "20240201"}
    assert len(leavers) > 30
    window = [d for d in stats_snaps.dates if "20240115" <= d <= "20240131"]
    stay, leave = Counter(), Counter()
    for d in window:
        for s in stats_snaps.active(d):
            group = leave if s in leavers else stay
            group["days"] += 1
            group["voice"] += calls[(s, d)]
            group["offnet"] += offnet[(s, d)]
            group["data"] += sessions[(s, d)]
    assert leave["data"] / leave["days"] < 0.85 * stay["data"] / stay["days"]
    assert leave["offnet"] / leave["voice"] > 1.2 * stay["offnet"] / stay["voice"]


def test_docs_describe_every_option_and_reason_code():
    text = (REPO / "docs" / "generator.md").read_text(encoding="utf-8")
    options = [a for action in build_parser()._subparsers._group_actions[0].choices["generate"]._actions
               for a in action.option_strings if a.startswith("--") and a != "--help"]
    assert options and not [o for o in options if f"`{o}" not in text]
    assert not [r for r in REASONS if f"`{r}`" not in text]
