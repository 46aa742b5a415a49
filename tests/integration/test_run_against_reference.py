"""`crm run` end to end on generated data, checked against an independent recomputation.

tests/reference/recompute.py reads the raw landing files itself and shares no code with the
pipeline (tests/reference/test_independence.py asserts that).
"""

from __future__ import annotations

import math
import stat
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from crm_pipeline import cli, ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.errors import EXIT_OK
from crm_pipeline.io import delta_rs
from crm_pipeline.pipeline.churn import SCORE_COLUMNS as CHURN_SCORE_COLUMNS
from crm_pipeline.pipeline.marts import MART_TABLES
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY, MONTHS
from tests.reference.recompute import clv_given_model, load_config

pytestmark = [pytest.mark.spark, pytest.mark.integration]
CONTRACT_TABLES = ("subscriber_month", "kpi_month", "segment_summary", "segment_migration", "revenue_concentration",
                   "revenue_lorenz", "key_account_month", "clv_model")
# doubles agree to 1e-9 (relative or absolute); the component scores and the indices built from logarithms to 1e-6
TOLERANCE = 1e-9
SCORE_TOLERANCE = 1e-6
SCORE_COLUMNS = ("cv_revenue", "cv_margin", "cv_payment", "pv_revenue_growth", "pv_data_growth", "pv_tenure",
                 "pv_data_adoption", "pv_network", "pv_life_stage", "pv_calling_circle", "pv_on_net_share",
                 "current_value_index", "potential_value_index")


def test_run_succeeds_twice(published):
    assert published["code"] == 0 and published["code2"] == 0


def test_every_complete_month_is_published_and_no_other(published):
    months = sorted(set(published["first"]["subscriber_month"]["month"]))
    assert [m.date() if hasattr(m, "date") else m for m in months] == published["ref"].complete_months
    assert len(months) == len(MONTHS)


def _as_dates(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["month"] = pd.to_datetime(df["month"]).dt.date
    return df


def _is_null(x) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame, keys: list[str],
                         tolerance: dict[str, float] | None = None) -> None:
    """Same keys, and per column equal values (doubles within their tolerance, NULL only with NULL)."""
    tolerance = tolerance or {}
    missing = [c for c in want.columns if c not in got.columns]
    assert not missing, f"published table lacks {missing}"
    got, want = _as_dates(got[list(want.columns)]), _as_dates(want)
    merged = want.merge(got, on=keys, how="outer", suffixes=("_ref", "_got"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    assert unmatched.empty, (f"{len(unmatched)} keys in one table only (ref {len(want)} rows, published {len(got)})",
                             unmatched[[*keys, "_merge"]].head(10).to_string())
    assert len(got) == len(want), f"duplicate keys: ref {len(want)} rows, published {len(got)}"
    mismatches = []
    for col in [c for c in want.columns if c not in keys]:
        tol = tolerance.get(col, TOLERANCE)
        for x, y, k in zip(merged[f"{col}_ref"], merged[f"{col}_got"], merged[keys].itertuples(index=False)):
            if _is_null(x) or _is_null(y):
                same = _is_null(x) and _is_null(y)
            elif isinstance(x, (float, np.floating)) or isinstance(y, (float, np.floating)):
                same = math.isclose(float(x), float(y), rel_tol=tol, abs_tol=tol)
            else:
                same = x == y
            if not same:
                mismatches.append((col, tuple(k), x, y))
    assert not mismatches, f"{len(mismatches)} values differ (column, key, ref, published): {mismatches[:10]}"


def test_subscriber_month_equals_the_independent_recomputation(published):
    ref = published["ref"].subscriber_month
    _assert_frames_equal(published["first"]["subscriber_month"], ref, ["month", "subscriber_id"],
                         {c: SCORE_TOLERANCE for c in SCORE_COLUMNS})


def test_kpi_month_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["kpi_month"], published["ref"].kpi_month,
                         ["month", "dimension", "dimension_value"])


def test_segment_summary_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["segment_summary"], published["ref"].segment_summary,
                         ["month", "value_segment"])


def test_segment_migration_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["segment_migration"], published["ref"].segment_migration,
                         ["month", "from_segment", "to_segment"])


def test_revenue_concentration_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["revenue_concentration"], published["ref"].revenue_concentration,
                         ["month"])


def test_revenue_lorenz_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["revenue_lorenz"], published["ref"].revenue_lorenz, ["month", "point"])


def test_key_account_month_equals_the_independent_recomputation(published):
    _assert_frames_equal(published["first"]["key_account_month"], published["ref"].key_account_month,
                         ["month", "group_id"])


def test_lost_customers_equal_the_independent_recomputation(published):
    ref = published["ref"].lost_customers
    assert len(ref) > 0
    _assert_frames_equal(published["first"]["lost_customers"], ref, ["month", "subscriber_id"],
                         {"offnet_share_before": SCORE_TOLERANCE})


def test_no_month_is_scored_without_a_model_whose_labels_it_knew(published):
    """Six complete months: four labelled ones (a month is labelled once M+2 is complete) train and
    test a model, which may score the months from the last one its labels reach, and no earlier."""
    sm, models = _as_dates(published["first"]["subscriber_month"]), published["first"]["churn_model"]
    known = {v: pd.Timestamp(m).date() for v, m in zip(models["model_version"], models["labels_known_through"])}
    assert known, "six complete months train a churn model"
    scored = sm[sm["churn_score"].notna()]
    assert not scored.empty and scored["churn_model_version"].notna().all()
    for month, version in set(zip(scored["month"], scored["churn_model_version"])):
        assert version in known and month >= known[version], (month, version, known)
    assert sm[sm["month"] < min(known.values())]["churn_score"].isna().all()
    watched = set(_as_dates(published["first"]["churn_watchlist"])["month"])
    assert watched and watched <= set(scored["month"])


def test_the_rescore_rebuilt_only_the_score_marts_and_a_rebuild_finds_them_unchanged(published, tmp_path,
                                                                                    monkeypatch, capsys):
    """The run's rescore (after `train` fitted the model that scores the last month) rebuilt only
    the marts that hold churn scores, from the stored subscriber months and churn features; a
    rebuild of every mart of that month from silver and the rollups, with the same model, finds all
    of them unchanged (the content fingerprints `crm analyse` compares before writing)."""
    import re
    import shutil

    month = f"{MONTHS[-1]:%Y-%m}"
    logs = published["logs"]
    rescore = logs[logs.index(f"analyse: rescoring 1 months {month} .. {month}"):]
    rescore = rescore[:rescore.index("analyse: gold written")]
    assert re.findall(r"gold/(\w+): built and validated", rescore) == \
        [name for name in MART_TABLES if name in CHURN_SCORE_COLUMNS]
    lake = shutil.copytree(published["lake"].root, tmp_path / "lake")  # other tests read the run's lake
    monkeypatch.setenv("CRM_MSISDN_HMAC_KEY", KEY)
    capsys.readouterr()
    assert cli.main(["analyse", "--lake", str(lake), "--month", month]) == EXIT_OK
    assert f"analyse: unchanged, not rewritten: {', '.join(MART_TABLES)}" in capsys.readouterr().out


def test_clv_is_the_sbg_value_under_the_published_parameters(published):
    """clv_fen recomputed from the published subscriber-month inputs and crm.clv_model; a difference of 1 fen
    is accepted only where the exact value lies within 1e-6 of a half fen (double rounding)."""
    sm = published["first"]["subscriber_month"]
    want = clv_given_model(sm, published["first"]["clv_model"], load_config())
    mismatches = []
    for w, exact, g, month, sid in zip(want["clv_fen"], want["clv_unrounded"], sm["clv_fen"], sm["month"],
                                       sm["subscriber_id"]):
        if _is_null(w) or _is_null(g):
            same = _is_null(w) and _is_null(g)
        else:
            same = int(g) == w or (abs(int(g) - w) == 1 and abs(abs(exact) % 1 - 0.5) < 1e-6)
        if not same:
            mismatches.append((month, sid, w, g))
    assert not mismatches, f"{len(mismatches)} clv_fen differ (month, subscriber, ref, published): {mismatches[:10]}"
    assert sm["clv_fen"].notna().any()  # the months after the first have parameters


def test_value_segments_add_up_to_all(published):
    k = published["first"]["kpi_month"]
    seg = k[k["dimension"] == "value_segment"].groupby("month")[["active_subscribers", "revenue_fen"]].sum()
    all_ = k[k["dimension"] == "ALL"].set_index("month")[["active_subscribers", "revenue_fen"]]
    assert seg.sort_index().equals(all_.sort_index())


def test_a_second_run_commits_nothing_to_any_lake_table(published):
    after_first, after_second = published["versions"]
    assert len(after_first) > 30 and after_second == after_first


def test_a_second_run_on_the_same_deliveries_rebuilds_no_month_and_says_so(published):
    """Every complete month's gold was built from the deliveries loaded now: the second run leaves
    it as it is (a month is rebuilt once a delivery it reads changes: the corrected bill below)."""
    span = f"{MONTHS[0]:%Y-%m} .. {MONTHS[-1]:%Y-%m}"
    said = f"analyse: every complete month ({span}) is built from the deliveries loaded now; none rebuilt"
    assert published["logs"].count(said) == 1
    assert published["logs"].count(f"analyse: building {len(MONTHS)} months") == 1
    steps = [r["message"] for r in delta_rs.read(published["lake"].ops("pipeline_runs"), ["run_id", "message"])
             .to_pylist() if r["run_id"] == "run-2"]  # its steps' rows (the file rows are run-1's)
    assert f"gold current: every complete month ({span}) built from the deliveries loaded now" in steps
    assert not [m for m in steps if m.startswith(("built ", "rescored "))], steps


def test_a_second_run_leaves_every_crm_table_unchanged(published):
    first, second = published["first"], published["second"]
    assert first.keys() == second.keys() and set(CONTRACT_TABLES) <= set(first)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)


def test_no_raw_pii_in_crm_and_contact_file_is_owner_only(published):
    wh = published["warehouse"]
    for name, df in published["first"].items():
        assert not {"msisdn", "customer_name", "id_number"} & set(df.columns), name
    restricted = wh.with_name("warehouse_restricted.duckdb")
    assert stat.S_IMODE(restricted.stat().st_mode) == 0o600
    con = duckdb.connect(str(restricted), read_only=True)
    n = con.execute('SELECT count(*) FROM "crm_restricted"."contact" WHERE length(msisdn) = 11').fetchone()[0]
    con.close()
    assert n > 0


def test_ops_tables_gain_the_second_runs_rows(published):
    con = duckdb.connect(str(published["warehouse"]), read_only=True)
    runs = {r[0] for r in con.execute('SELECT DISTINCT run_id FROM "crm_ops"."pipeline_runs"').fetchall()}
    con.close()
    assert {"run-1", "run-2"} <= runs


def test_every_layer_reconciles_with_the_one_before_in_crm_ops(published):
    """The run's checks between layers, in crm_ops.data_quality: silver records against the
    rollups (every rebuilt day), the month's marts against each other, and every published table
    against its gold rows (inside the publish transaction)."""
    from crm_pipeline.publish.publish import published_tables

    con = duckdb.connect(str(published["warehouse"]), read_only=True)
    rows = con.execute('SELECT table_name, check_name, success, business_date FROM "crm_ops"."data_quality" '
                       "WHERE run_id = 'run-1'").fetchall()
    con.close()
    by_table = {}
    for table, check, success, day in rows:
        by_table.setdefault(table, []).append((check, success, day))
    rollup = by_table["gold_rollup_reconciliation"]
    assert len(rollup) == 6 and all(success for _, success, _ in rollup)  # row count, key, four gaps
    assert {c for c, _, _ in by_table["gold_reconciliation"]} >= {"expect_column_values_to_be_between(segment_gap)"}
    published_checks = {t[len("published_"):]: checks for t, checks in by_table.items() if t.startswith("published_")}
    assert set(published["first"]) <= set(published_checks) <= {name for _, name, _, _ in published_tables()}
    for name, checks in published_checks.items():  # one per table, over the months published
        assert checks == [("row_count_equals_gold", True, MONTHS[-1])], name


def test_a_corrected_bill_restates_the_month_and_records_it(spark, published, tmp_path):
    import gzip
    import hashlib
    import shutil

    # on copies of the session run's landing zone, lake and warehouse, which other tests compare with
    landing = shutil.copytree(published["landing"], tmp_path / "landing")
    lake = LakeLayout(str(shutil.copytree(published["lake"].root, tmp_path / "lake")))
    wh = tmp_path / "wh" / published["warehouse"].name
    shutil.copytree(published["warehouse"].parent, wh.parent)  # the restricted file beside it too
    day = landing / "bill" / "20260610"  # a later bill delivery for May
    day.mkdir(parents=True)
    src = sorted((landing / "bill" / "20260602").glob("BILL_20260602_*.dat*"))
    lines = []
    for f in src:
        data = f.read_bytes()
        lines += (gzip.decompress(data) if f.name.endswith(".gz") else data).decode("utf-8").splitlines()
    first = lines[0].split("|")
    first[5] = str(int(first[5]) + 12345)
    lines[0] = "|".join(first)
    body = ("\n".join(lines) + "\n").encode()
    (day / "BILL_20260610_001.dat").write_bytes(body)
    (day / "BILL_20260610.ctl").write_text(
        f"BILL_20260610_001.dat|{len(lines)}|{len(body)}|{hashlib.md5(body).hexdigest()}|UTF-8\n")
    code = run_pipeline(spark, landing, lake, f"duckdb:///{wh}", ops.RunContext("run-3"), KEY)
    assert code == 0
    con = duckdb.connect(str(wh), read_only=True)
    restated = con.execute(
        'SELECT month, table_name, run_id FROM "crm_ops"."restatements" ORDER BY 2').fetchall()
    revenue = con.execute('SELECT revenue_fen FROM "crm"."subscriber_month" '
                          "WHERE month = DATE '2026-05-01' AND subscriber_id = ?", [first[2]]).fetchone()[0]
    con.close()
    before = published["first"]["subscriber_month"]
    old = before[(pd.to_datetime(before["month"]).dt.date == date(2026, 5, 1))
                 & (before["subscriber_id"] == first[2])]["revenue_fen"].iloc[0]
    assert revenue == old + 12345
    assert (date(2026, 5, 1), "kpi_month", "run-3") in restated
    assert (date(2026, 5, 1), "subscriber_month", "run-3") in restated
    # the month, and later months whose trailing windows hold it; no table of an earlier month
    # (their content is exact: summed in another order, it is still the same)
    months = {m for m, table, run in restated if run == "run-3"}
    assert min(months) == date(2026, 5, 1), sorted(r for r in restated if r[0] < date(2026, 5, 1))
    # and the run rebuilt only those: January to April read nothing the bill changed
    steps = delta_rs.read(lake.ops("pipeline_runs"), ["run_id", "message"]).to_pylist()
    assert "built 2026-05, 2026-06" in [r["message"] for r in steps if r["run_id"] == "run-3"]


def test_the_run_ends_with_a_closing_summary(published):
    (line,) = [x for x in published["logs"].splitlines() if x.startswith("run run-1 finished")]
    con = duckdb.connect(str(published["warehouse"]), read_only=True)
    try:
        deliveries, read, quarantined = con.execute(
            "SELECT count(DISTINCT (feed, business_date)) FILTER (WHERE status = 'SUCCESS'), sum(rows_read), "
            "sum(rows_quarantined) FROM crm_ops.pipeline_runs WHERE run_id = 'run-1' AND source_file IS NOT NULL"
        ).fetchone()
    finally:
        con.close()
    assert line.startswith("run run-1 finished in ")
    assert f": {deliveries:,} deliveries loaded, 0 failed; {read:,} records read, " in line
    assert f", {quarantined:,} quarantined, " in line
    assert f"; published {len(MONTHS)} month(s) {MONTHS[0]:%Y-%m}..{MONTHS[-1]:%Y-%m}: " in line and f"rows to duckdb:///{published['warehouse']}" in line
