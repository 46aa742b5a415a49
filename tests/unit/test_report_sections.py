"""The report's sections on small frames shaped as the gold tables, where the shared pipeline run
has too few months: the churn model's gains, calibration and drift and the watch list, from the
evaluation functions the training uses, drawn in headless Chromium. And the number formats."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import date

import numpy as np
import pandas as pd
import pytest

from crm_pipeline.feeds import table_spec
from crm_pipeline.models.churn import calibration_table, lift_curve, psi
from crm_pipeline.report import html, sections
from crm_pipeline.report.data import ReportData
from tests.report_browser import open_report

MONTH = date(2026, 8, 1)
VERSION = "m-0001"


def _data(**frames) -> ReportData:
    """The report's frames: those given, the rest empty with their gold table's columns."""
    empty = {f.name: pd.DataFrame(columns=_columns(f.name)) for f in fields(ReportData)}
    return ReportData(**{**empty, "month": MONTH, "months": [date(2026, m, 1) for m in range(1, 9)],
                         "scoring_model": VERSION, **frames})


def _columns(field: str) -> list[str]:
    tables = {"models": "churn_model", "lift": "churn_model_lift", "calibration": "churn_model_calibration",
              "drift": "model_drift", "watchlist": "churn_watchlist", "subscribers": "subscriber_month"}
    return table_spec(tables[field]).column_names if field in tables else []


def _model_frames(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 0.4, 2000)
    y = (rng.uniform(0, 1, 2000) < score).astype(float)  # a calibrated model, by construction
    lift = pd.concat([lift_curve(y, s).assign(algorithm=a) for a, s in
                      (("gradient_boosting", score), ("logistic_regression", score * 0.5 + 0.1))])
    calib = pd.concat([calibration_table(y, s).assign(algorithm=a) for a, s in
                       (("gradient_boosting", score), ("logistic_regression", score * 0.5 + 0.1))])
    drift = pd.DataFrame({"model_version": VERSION, "feature": ["voice_mou", "data_mb", "churn_score"],
                          "psi": [psi([0.5, 0.5], [0.5, 0.5]), psi([0.5, 0.5], [0.8, 0.2]),
                                  psi([0.3, 0.7], [0.35, 0.65])],
                          "threshold": 0.25})
    drift["flagged"] = drift["psi"] > drift["threshold"]
    models = pd.DataFrame([{"model_version": VERSION, "algorithm": "gradient_boosting",
                            "train_months": "2026-01-01,2026-02-01,2026-03-01", "test_month": date(2026, 5, 1),
                            "auc": 0.83, "baseline_auc": 0.80, "top_decile_lift": 4.9, "brier": 0.041}])
    subscribers = pd.DataFrame({"churn_model_version": [VERSION] * 3 + [None]})
    watch = pd.DataFrame({
        "priority_rank": [1, 2, 3], "msisdn_key": ["a" * 64, "b" * 64, "c" * 64],
        "value_segment": ["VALUABLE", "POTENTIAL", "VALUABLE"], "churn_score": [0.31, 0.52, 0.2],
        "clv_fen": [1_500_000, 300_000, 900_000], "expected_loss_fen": [465_000, 156_000, 180_000],
        "top_reasons": [json.dumps([{"reason": "data use -40% against the 3 months before"}]), "[]",
                        json.dumps(["42% of call minutes with other operators"])],
        "recommended_action": ["call", "offer", "call"], "control_group": [False, False, True]})
    return dict(models=models, lift=lift.assign(model_version=VERSION),
                calibration=calib.assign(model_version=VERSION), drift=drift, subscribers=subscribers,
                watchlist=watch)


def test_churn_model_section_reports_the_scoring_models_card_and_flagged_drift():
    s = sections.churn_model(_data(**_model_frames()))
    assert s.empty is None and len(s.figures) == 3
    assert ("AUC (test month)", "0.830", "baseline 0.800") in s.cards
    assert s.cards[0] == ("Model", VERSION, "gradient_boosting, trained on 2026-01 to 2026-03")
    assert "Drift above the alert level: data_mb." in s.lead
    gains = s.figures[0]
    assert [t.name for t in gains.data] == ["random", "gradient_boosting", "logistic_regression"]
    assert list(gains.data[1].x)[-1] == pytest.approx(100) and list(gains.data[1].y)[-1] == pytest.approx(100)


def test_watch_list_section_counts_only_the_called_in_the_expected_loss():
    s = sections.watchlist(_data(**_model_frames()))
    loss = dict(zip(s.figures[0].data[0].x, s.figures[0].data[0].y))
    assert loss["VALUABLE"] == pytest.approx(4650) and loss["POTENTIAL"] == pytest.approx(1560)  # CNY
    (caption, table), = s.tables
    assert list(table["control group"]) == ["", "", "yes (not called)"]
    assert list(table["why"]) == ["data use -40% against the 3 months before", "",
                                  "42% of call minutes with other operators"]
    assert list(table["msisdn_key"]) == ["aaaaaaaaaaaa…", "bbbbbbbbbbbb…", "cccccccccccc…"]


def test_without_a_scoring_model_both_sections_say_why():
    d = _data(scoring_model=None)
    assert sections.churn_model(d).empty.startswith("no churn model scored this month yet")
    assert sections.watchlist(d).empty.startswith("no watch list this month")


def test_model_sections_are_drawn_in_the_browser(tmp_path):
    d = _data(**_model_frames())
    page = tmp_path / "model.html"
    page.write_text(html.render(d, [sections.churn_model(d), sections.watchlist(d)], "lake"), encoding="utf-8")
    seen = open_report(page, ["churn-model", "watchlist"])
    assert seen.console_errors == [] and seen.requests == []
    charts = {s["id"]: s["charts"] for s in seen.sections}
    assert len(charts["churn-model"]) == 3 and len(charts["watchlist"]) == 1
    assert all(marks > 0 for c in charts.values() for marks in c), charts


@pytest.mark.parametrize("fen, text", [(123456, "1,234.56 CNY"), (-5, "-0.05 CNY"), (123456789, "1,234,568 CNY"),
                                       (None, "-"), (float("nan"), "-")])
def test_money_is_shown_in_cny(fen, text):
    assert sections.cny(fen) == text

