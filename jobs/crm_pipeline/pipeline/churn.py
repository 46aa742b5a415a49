"""Churn: training (`crm train`) and, inside `crm analyse`, features, scores, watch list, lost
customers and drift (docs/churn.md). Logic lives in models/churn.py and transforms/marts/churn.py.

Honest scoring: a model trained with labels whose data reaches month E (labels_known_through)
scores only months M >= E; month M is scored by the newest such model of the current spec.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline.io import delta, delta_rs
from crm_pipeline.models.churn import (
    FEATURES,
    ChurnParams,
    EmpParams,
    TooFewChurners,
    evaluate,
    fit_models,
    predict,
    psi,
    reasons_in_spark,
    reference_bins,
    score_in_spark,
)
from crm_pipeline.models.registry import ModelCard, Registry, utc_now_iso
from crm_pipeline.months import add_months
from crm_pipeline.settings import LakeLayout
from crm_pipeline.stages import stage

MODEL_NAME = "churn"
DEPLOYED, BASELINE = "gradient_boosting", "logistic_regression"

#: Gold tables `crm train` writes from the registry (each has schemas/tables/<name>.json).
MODEL_TABLES = ("churn_model", "churn_model_calibration", "churn_model_lift")

#: Mart columns derived from the churn scores (None: the whole table): a rescore that changes only
#: these is not a restatement.
SCORE_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "subscriber_month": ("churn_score", "churn_risk_band", "churn_model_version"),
    "segment_summary": ("avg_churn_score",),
    "churn_watchlist": None,
    "model_drift": None,
}

#: Settings that change what a model is; models of another spec are never used to score.
SPEC_KEYS = ("min_train_months", "max_train_months", "max_training_rows", "seed", "min_positives",
             "gradient_boosting", "logistic")


#: Version of the training rules in this module (labels, windows, sampling): raise it when they change,
#: so that models trained under the old rules stop scoring and are trained anew.
TRAINING_RULES_VERSION = 3


def spec_hash(config: Mapping) -> str:
    """Hash of what makes models comparable: training rules, feature list and model-shaping settings."""
    payload = json.dumps({"rules": TRAINING_RULES_VERSION, "features": list(FEATURES),
                          **{k: config[k] for k in SPEC_KEYS}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Which model scores which month


def scoring_plan(cards: list[ModelCard], months: list[date], spec: str) -> dict[date, ModelCard]:
    """Month -> the newest model of `spec` whose labels were all known at that month's end
    (first_scorable_month <= month). Months before any such model are absent (NULL scores)."""
    usable = sorted((c for c in cards if c.spec == spec), key=lambda c: (c.first_scorable_month, c.trained_at))
    plan = {}
    for m in months:
        fit = [c for c in usable if c.first_scorable_month <= m]
        if fit:
            plan[m] = fit[-1]
    return plan


def months_to_rescore(lake: LakeLayout, months: list[date], config: Mapping) -> list[date]:
    """Months of `months` whose newest honest model (scoring_plan) is not the one recorded in gold
    subscriber_month's churn_model_version. Read through delta-rs a batch at a time (no Spark; the
    driver holds one batch and a version per month)."""
    recorded = recorded_models(lake.gold("subscriber_month"), months)
    if recorded is None:
        return list(months)
    plan = scoring_plan(Registry(lake.root, MODEL_NAME).cards(), months, spec_hash(config))
    return [m for m in months if (plan[m].version if m in plan else None) != recorded.get(m)]


def recorded_models(path: str, months: list[date]) -> dict[date, str] | None:
    """Month -> the churn_model_version recorded in gold subscriber_month (its largest, should a month
    hold two; absent when every score is NULL); None before the table exists or has the column."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from crm_pipeline.io import delta_rs

    dataset = delta_rs.dataset(path)
    if dataset is None or "churn_model_version" not in dataset.schema.names:
        return None
    out: dict[date, str] = {}
    scan = dataset.scanner(columns=["month", "churn_model_version"],
                           filter=ds.field("month").isin(months) & ds.field("churn_model_version").is_valid())
    for batch in scan.to_batches():
        grouped = pa.Table.from_batches([batch]).group_by("month").aggregate([("churn_model_version", "max")])
        for row in grouped.to_pylist():
            month, version = row["month"], row["churn_model_version_max"]
            out[month] = max(out.get(month, version), version)
    return out


def closing_months(path: str) -> dict[date, bool] | None:
    """Month of gold subscriber_month -> whether any subscriber is active at its end (`closing`),
    read through delta-rs a batch at a time; None before the table exists or has the columns
    churn labels need."""
    import pyarrow.compute as pc

    from crm_pipeline.io import delta_rs

    dataset = delta_rs.dataset(path)
    if dataset is None or not {"closing", "terminate_reason"} <= set(dataset.schema.names):
        return None
    out: dict[date, bool] = {}
    for batch in dataset.scanner(columns=["month", "closing"]).to_batches():
        for month in pc.unique(batch.column("month")).to_pylist():
            out.setdefault(month, False)
        closing = pc.fill_null(batch.column("closing"), False)
        for month in pc.unique(pc.filter(batch.column("month"), closing)).to_pylist():
            out[month] = True
    return out


# ---------------------------------------------------------------------------------------------
# Training


def training_windows(labelled_months: list[date], complete: list[date], config: Mapping) -> list[tuple]:
    """(labels_known_through E, train months, test month) per labelled test month T with E = T + 2 a
    complete month: the model trains on the labelled months m with m + 2 <= T (the labels a model
    scoring T would have had: none of their outcome months overlaps T's), the latest
    `max_train_months` of them, and needs at least `min_train_months`."""
    lo, hi = int(config["min_train_months"]), int(config["max_train_months"])
    out = []
    for test in labelled_months:
        end = add_months(test, 2)
        train = [m for m in labelled_months if add_months(m, 2) <= test][-hi:]
        if end in complete and len(train) >= lo:
            out.append((end, tuple(train), test))
    return out


def _sample(labelled: DataFrame, max_rows_per_month: int, seed: int) -> pd.DataFrame:
    """Labelled feature rows collected once, at most about `max_rows_per_month` per month: a month with
    n rows keeps those whose hash draw of (seed, month, subscriber_id) is below max_rows / n. The draw
    does not depend on partitioning, and a month's sample does not change as later months arrive, so
    a training window's rows (and its model version) are reproducible."""
    from crm_pipeline.transforms.marts.churn import control_draw

    counts = {r.month: r.n for r in labelled.groupBy("month").agg(F.count(F.lit(1)).alias("n")).collect()}
    fraction = F.create_map(*[x for m, n in sorted(counts.items())
                              for x in (F.lit(m), F.lit(min(1.0, max_rows_per_month / n)))])
    frame = labelled.where(control_draw(F.col("month"), F.col("subscriber_id"), seed) < fraction[F.col("month")])
    pdf = frame.select("month", "subscriber_id", *FEATURES, "label", "churn_reason").toPandas()
    return pdf.sort_values(["month", "subscriber_id"], kind="mergesort").reset_index(drop=True)


def training_sample(labelled: DataFrame, config: Mapping) -> pd.DataFrame:
    """`_sample` with the configured bound: max_training_rows spread over max_train_months."""
    per_month = max(1, int(config["max_training_rows"]) // int(config["max_train_months"]))
    return _sample(labelled, per_month, int(config["seed"]))


def _delta_version(path: str) -> int | None:
    from deltalake import DeltaTable

    try:
        return DeltaTable(path).version()
    except Exception:  # noqa: BLE001  (no table yet)
        return None


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


@dataclass(frozen=True)
class TrainingPlan:
    """What `crm train` has to do, from gold (delta-rs) and the model registry: no Spark."""

    ready: bool  # gold holds churn features and the subscriber months that label them
    complete: list[date]  # the months of gold subscriber_month
    labelled_months: list[date]
    windows: list[tuple]  # every training window the months allow: (labels known through, train months, test)
    todo: list[tuple]  # those to fit now
    spec: str

    def nothing_to_fit(self, config: Mapping) -> str:
        """Why there is nothing to fit (when `todo` is empty)."""
        if not self.ready:
            return "train: no churn features yet; run `crm analyse` first"
        if not self.windows:
            lo = int(config["min_train_months"])
            return (f"train: {len(self.labelled_months)} labelled month(s) (a month is labelled once M+2 is "
                    f"complete); a model needs {lo + 2} in a row: {lo} to train, then one whose labels overlap "
                    "the test month's, then the test month")
        return f"train: every training window has a model ({len(self.windows)}, spec {self.spec})"


def training_plan(lake: LakeLayout, config: Mapping, retrain: bool = False) -> TrainingPlan:
    """The training windows the complete months allow, and those the registry lacks (all of them
    with `retrain`)."""
    from crm_pipeline.io import delta_rs
    from crm_pipeline.transforms.marts.churn import label_months

    spec = spec_hash(config)
    has_closing = closing_months(lake.gold("subscriber_month"))
    if has_closing is None or delta_rs.table(lake.gold("churn_features")) is None:
        return TrainingPlan(False, [], [], [], [], spec)
    complete = sorted(has_closing)
    labelled_months = [m for m in label_months(complete) if has_closing[m]]
    windows = training_windows(labelled_months, complete, config)
    existing = {(c.spec, c.labels_known_through) for c in Registry(lake.root, MODEL_NAME).cards()}
    todo = [w for w in windows if retrain or (spec, w[0].isoformat()) not in existing]
    return TrainingPlan(True, complete, labelled_months, windows, todo, spec)


def train(spark: SparkSession, lake: LakeLayout, config: Mapping, config_version: str, retrain: bool = False,
          progress: Callable[[str], None] = print, run_id: str | None = None,
          plan: TrainingPlan | None = None) -> tuple[list[ModelCard], list[dict]]:
    """Train a model for every training window the complete months allow that the registry lacks
    (all of them with `retrain`; `plan`: `training_plan`'s, when the caller has it), then rewrite
    the gold model tables from the registry (`write_model_tables`, which validates those it rewrites).

    Reads gold churn_features and subscriber_month (written by `crm analyse`). Returns the new
    cards and the crm_ops.data_quality rows of the model tables' checks.
    """
    from crm_pipeline.transforms.marts.churn import churn_labels

    plan = plan or training_plan(lake, config, retrain)
    if not plan.ready:
        progress(plan.nothing_to_fit(config))
        return [], []
    registry = Registry(lake.root, MODEL_NAME)
    spec, todo = plan.spec, plan.todo
    if not todo:
        progress(plan.nothing_to_fit(config))
        return [], write_model_tables(spark, lake, registry, spec, run_id)
    progress(f"train: {len(todo)} model(s) to fit, windows ending {', '.join(f'{w[0]:%Y-%m}' for w in todo)}")
    # the labels (a join of every month's subscribers with the churn events), only to train
    sm = delta.read(spark, lake.gold("subscriber_month"))
    labels = churn_labels(sm.select("subscriber_id", "month", "closing", "churned_in_month", "terminate_reason"),
                          plan.complete)
    labelled = delta.read(spark, lake.gold("churn_features")).join(labels, ["month", "subscriber_id"])
    sample = training_sample(labelled, config)
    data_version = {t: _delta_version(lake.gold(t)) for t in ("churn_features", "subscriber_month")}
    params, emp = ChurnParams.from_config(config), EmpParams.from_config(config["emp"])
    new = []
    for end, train_months, test_month in todo:
        clock = time.monotonic()
        tr, te = sample[sample["month"].isin(train_months)], sample[sample["month"] == test_month]
        try:
            estimators = fit_models(tr, tr["label"], params)
        except TooFewChurners as exc:
            progress(f"  window ending {end:%Y-%m}: no model ({exc})")
            continue
        metrics, calibration, lift = {}, {}, {}
        for algo, est in estimators.items():
            ev = evaluate(te["label"].to_numpy(), predict(est, te), emp)
            metrics[algo] = {"auc": ev.auc, "top_decile_lift": ev.top_decile_lift, "emp": ev.emp,
                             "brier": ev.brier, "base_rate": ev.base_rate}
            calibration[algo], lift[algo] = _records(ev.calibration), _records(ev.lift)
        by_reason = churn_types(te, predict(estimators[DEPLOYED], te))
        bins = int(config["drift"]["bins"])
        reference = {f: reference_bins(tr[f], bins) for f in FEATURES}
        reference["churn_score"] = reference_bins(pd.Series(predict(estimators[DEPLOYED], tr)), bins)
        digest = hashlib.sha256((spec + end.isoformat() + tr.to_csv(index=False)).encode()).hexdigest()[:16]
        notes = []
        if (metrics[DEPLOYED]["auc"] or 0) < (metrics[BASELINE]["auc"] or 0):
            notes.append("the logistic baseline has the higher out-of-time AUC on this test month")
        card = ModelCard(
            version=digest, name=MODEL_NAME, trained_at=utc_now_iso(), spec=spec, algorithm=DEPLOYED,
            baseline_algorithm=BASELINE, train_months=[m.isoformat() for m in train_months],
            test_month=test_month.isoformat(), labels_known_through=end.isoformat(), n_train=len(tr),
            n_test=len(te), positives_train=int(tr["label"].sum()), positives_test=int(te["label"].sum()),
            feature_list=list(FEATURES), metrics=metrics, calibration=calibration, lift=lift,
            drift_reference=reference, data_version=data_version, churners_by_reason=by_reason,
            params={k: config[k] for k in SPEC_KEYS}, config_version=config_version, notes=notes,
            fitted={"boosting": estimators[DEPLOYED].params, "trees_per_member": estimators[DEPLOYED].n_iter_,
                    "oof_log_loss": round(estimators[DEPLOYED].oof_log_loss, 6)},
        )
        registry.register(card, estimators)
        new.append(card)
        m = metrics[DEPLOYED]
        b = metrics[BASELINE]
        progress(f"  model {card.version} (scores from {end:%Y-%m}): trained on {len(tr):,} rows of "
                 f"{train_months[0]:%Y-%m}..{train_months[-1]:%Y-%m}, tested on {test_month:%Y-%m} "
                 f"({len(te):,} rows, {card.positives_test} churners): AUC {_f(m['auc'])} (baseline {_f(b['auc'])}), "
                 f"top-decile lift {_f(m['top_decile_lift'], 2)}, EMP {_f(m['emp'], 2)} CNY, Brier {_f(m['brier'], 4)}; "
                 f"boosting {_chosen(estimators[DEPLOYED], config)}, trees per member {estimators[DEPLOYED].n_iter_} "
                 f"[{time.monotonic() - clock:.1f} s]")
    return new, write_model_tables(spark, lake, registry, spec, run_id)


def train_step(spark: SparkSession, lake: LakeLayout, ctx, settings, retrain: bool = False,
               progress: Callable[[str], None] = print, plan: TrainingPlan | None = None) -> list[ModelCard]:
    """`crm train`: `train` (which checks the gold model tables it rewrites), the checks' results and a
    crm_ops.pipeline_runs row."""
    from crm_pipeline import ops

    started = ops.utcnow()
    # A blocking failure raises before the tables are written; the caller's `ops.recorded` puts
    # its results on record.
    new, dq = train(spark, lake, settings.churn, settings.version, retrain=retrain, progress=progress,
                    run_id=ctx.run_id, plan=plan)
    ops.write_data_quality(lake, dq)
    ops.record_step(lake, ctx, started,
                    f"trained {len(new)} churn model(s)" + (f": {', '.join(c.version for c in new)}" if new else ""))
    return new


def nothing_to_train(lake: LakeLayout, ctx, plan: TrainingPlan, config: Mapping,
                     progress: Callable[[str], None] = print) -> bool:
    """With nothing to fit and the gold model tables mirroring the registry as the current suites
    checked them, say so and put the step on record, without Spark; False (nothing done) otherwise."""
    from crm_pipeline import ops

    cards = Registry(lake.root, MODEL_NAME).cards()
    if plan.todo or (plan.ready and not model_tables_current(lake, cards, plan.spec)):
        return False
    progress(plan.nothing_to_fit(config))
    ops.record_step(lake, ctx, ops.utcnow(), "trained 0 churn model(s)")
    return True


def _chosen(boosting, config: Mapping) -> str:
    """The searched settings the boosting kept, e.g. `max_depth 2, max_features 0.5`."""
    searched = sorted((config["gradient_boosting"].get("search") or {}))
    return ", ".join(f"{k} {boosting.params[k]}" for k in searched) or "fixed settings"


def churn_types(test: pd.DataFrame, score: np.ndarray) -> dict:
    """Per churn type of the test month (terminate_reason of the label: PORT_OUT, NON_PAYMENT,
    VOLUNTARY, OTHER, UNKNOWN): churners, and the share of them in the top 10 % of scores."""
    k = max(1, math.ceil(0.1 * len(test)))
    top = np.zeros(len(test), dtype=bool)
    top[np.argsort(-np.asarray(score), kind="mergesort")[:k]] = True
    churners = test["label"].to_numpy() == 1
    reasons = test["churn_reason"].fillna("UNKNOWN").to_numpy()
    out = {}
    for reason in sorted(set(reasons[churners])):
        mask = churners & (reasons == reason)
        out[reason] = {"churners": int(mask.sum()), "top_decile_share": round(float(top[mask].mean()), 4)}
    return out


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


MODEL_TABLE_DDL = {
    "churn_model": ("model_version string, trained_at timestamp_ntz, algorithm string, train_months string, "
                    "test_month date, labels_known_through date, auc double, top_decile_lift double, emp double, "
                    "brier double, base_rate double, n_train long, n_test long, positives_train long, "
                    "positives_test long, baseline_algorithm string, baseline_auc double, "
                    "baseline_top_decile_lift double, baseline_emp double, baseline_brier double, "
                    "feature_list string, data_version string, config_version string, spec string, in_use boolean, "
                    "note string, "
                    "test_churners_by_reason string"),
    "churn_model_calibration": ("model_version string, test_month date, algorithm string, bin int, n long, "
                                "mean_score double, observed_rate double"),
    "churn_model_lift": ("model_version string, test_month date, algorithm string, decile int, "
                         "targeted_share double, churners_captured_share double, cumulative_lift double, "
                         "churn_rate double"),
}


def model_table_rows(cards: list[ModelCard], current_spec: str) -> dict[str, list[tuple]]:
    """Rows of the gold model tables (MODEL_TABLE_DDL) from registry cards; `in_use` marks the
    cards of `current_spec`, the only ones that score."""
    from datetime import datetime

    def r(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

    out: dict[str, list[tuple]] = {k: [] for k in MODEL_TABLES}
    for c in cards:
        m, b = c.metrics[c.algorithm], c.metrics[c.baseline_algorithm]
        test = date.fromisoformat(c.test_month)
        out["churn_model"].append((
            c.version, datetime.fromisoformat(c.trained_at), c.algorithm, ",".join(c.train_months), test,
            c.first_scorable_month, r(m["auc"]), r(m["top_decile_lift"]), r(m["emp"]), r(m["brier"]),
            r(m["base_rate"]), c.n_train, c.n_test, c.positives_train, c.positives_test, c.baseline_algorithm,
            r(b["auc"]), r(b["top_decile_lift"]), r(b["emp"]), r(b["brier"]), json.dumps(c.feature_list),
            json.dumps(c.data_version, sort_keys=True), c.config_version, c.spec, c.spec == current_spec,
            "; ".join(c.notes) or None,
            json.dumps(c.churners_by_reason, sort_keys=True),
        ))
        for algo in (c.algorithm, c.baseline_algorithm):
            for row in c.calibration[algo]:
                out["churn_model_calibration"].append((c.version, test, algo, int(row["bin"]), int(row["n"]),
                                                       r(row["mean_score"]), r(row["observed_rate"])))
            for row in c.lift[algo]:
                out["churn_model_lift"].append((c.version, test, algo, int(row["decile"]), r(row["targeted_share"]),
                                                r(row["churners_captured_share"]), r(row["cumulative_lift"]),
                                                r(row["churn_rate"])))
    return out


def rows_digest(rows: list[tuple]) -> str:
    """A short hash of a model table's rows as `model_table_rows` builds them."""
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()[:16]


def model_tables_current(lake: LakeLayout, cards: list[ModelCard], spec: str) -> bool:
    """Whether every gold model table holds the rows of the registry's `cards`, checked by its current
    suite: its last write recorded both (`write_model_tables`). From the Delta logs: no Spark."""
    from crm_pipeline.quality import gx

    rows = model_table_rows(cards, spec)
    return all(_write_record(lake.gold(name)) == {"suite": gx.suite_hash(f"gold_{name}"),
                                                  "rows": rows_digest(rows[name])} for name in MODEL_TABLES)


def write_model_tables(spark: SparkSession, lake: LakeLayout, registry: Registry, current_spec: str,
                       run_id: str | None = None) -> list[dict]:
    """Mirror the registry into gold churn_model, churn_model_calibration and churn_model_lift.

    A table is checked (its gold suite) unless its content is unchanged and was checked by the same
    suite when written, and rewritten when its content changed or its last write did not record
    this content and suite (in the commit's userMetadata, which `model_tables_current` reads). A
    blocking failure raises `DataQualityError` before anything is written.
    Returns the crm_ops.data_quality rows of the checks run.
    """
    from crm_pipeline.feeds import conform, table_spec
    from crm_pipeline.pipeline.monthly import fingerprint
    from crm_pipeline.quality import gx

    rows = model_table_rows(registry.cards(), current_spec)
    changed, dq = [], []  # (frame, path, write record) of the tables to rewrite
    for name in MODEL_TABLES:
        suite, path = f"gold_{name}", lake.gold(name)
        record = {"suite": gx.suite_hash(suite), "rows": rows_digest(rows[name])}
        written = _write_record(path)
        if written == record:
            continue
        df = conform(spark.createDataFrame(rows[name], MODEL_TABLE_DDL[name]), table_spec(name))
        old = delta.read(spark, path)
        unchanged = old is not None and old.schema.simpleString() == df.schema.simpleString() \
            and fingerprint(old) == fingerprint(df)
        if not (unchanged and (written or {}).get("suite") == record["suite"]):
            dq += gx.dq_rows(gx.validate(df, suite, run_id=run_id), suite, run_id, None)
        changed.append((df, path, record))
    blocking = gx.blocking_error(dq)
    if blocking is not None:
        raise blocking
    for df, path, record in changed:  # a few rows each (a row per model, or per model and bin)
        delta_rs.overwrite_table(path, df.toArrow(), record)
    return dq


def _write_record(path: str) -> dict | None:
    """The userMetadata of the last commit that wrote a model table's content (maintenance commits
    come after it and record none); None when there is none, or another writer wrote it last."""
    from crm_pipeline.io import delta_rs

    return next(delta_rs.write_records(path, 20), None)


# ---------------------------------------------------------------------------------------------
# Inside `crm analyse`: features, scores, watch list, lost customers, drift


def churn_inputs(spark: SparkSession, lake: LakeLayout,
                 months: list[date]) -> tuple[DataFrame, DataFrame, DataFrame, int]:
    """Gold activity_months (M-3..M), gold contact_months and silver tickets (M-2..M) for `months`,
    and the shuffle partitions for the calling circle (from the pairs' stored size)."""
    from crm_pipeline.io import delta_rs
    from crm_pipeline.months import month_days
    from crm_pipeline.pipeline.rollups import month_summaries
    from crm_pipeline.pipeline.tables import silver
    from crm_pipeline.spark import partitions_for
    from crm_pipeline.transforms.marts.churn import ACTIVITY_LOOKBACK_MONTHS

    def and_before(n: int) -> list[date]:  # the batch's months and the n months before each
        return sorted({add_months(m, -k) for m in months for k in range(n + 1)})

    hi = max(month_days(max(months)))
    activity = month_summaries(spark, lake, "activity_months", and_before(ACTIVITY_LOOKBACK_MONTHS))
    contacts = month_summaries(spark, lake, "contact_months", and_before(2))
    circle_partitions = partitions_for(spark, delta_rs.partition_bytes(lake.gold("contact_months"), "month",
                                                                        and_before(2)))
    tickets = silver(spark, lake, "ticket").where(F.col("event_date").between(add_months(min(months), -2), hi))
    return activity, contacts, tickets, circle_partitions


def churn_marts(spark: SparkSession, lake: LakeLayout, rows: DataFrame, every: DataFrame, months: list[date],
                config: Mapping, progress: Callable[[str], None] = print) -> tuple[DataFrame, dict[str, DataFrame]]:
    """(rows with churn_score, churn_risk_band, churn_model_version; {churn_features, churn_watchlist,
    lost_customers, model_drift}) for the batch `months`, scored with the registry's models."""
    from crm_pipeline.transforms.marts.churn import churn_features, lost_customers

    activity, contacts, tickets, circle_partitions = churn_inputs(spark, lake, months)
    with stage("churn_features"):
        features = churn_features(rows, every, activity, contacts, tickets, circle_partitions).localCheckpoint(
            eager=True)
    scored, watchlist, drift = scored_marts(lake, rows, features, months, config, progress)
    lost = lost_customers(rows, every, config["winback"]["reason_weights"])
    return scored, {"churn_features": features, "churn_watchlist": watchlist, "lost_customers": lost,
                    "model_drift": drift}


def scored_marts(lake: LakeLayout, rows: DataFrame, features: DataFrame, months: list[date], config: Mapping,
                 progress: Callable[[str], None] = print) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(rows with churn_score, churn_risk_band, churn_model_version; churn_watchlist; model_drift) for
    `months`: `rows` (subscriber months without the score columns) scored from their churn
    `features` with the registry's newest honest models, as `crm analyse` builds them and
    `crm analyse --rescore` rebuilds them from the stored features."""
    from crm_pipeline.transforms.marts.churn import risk_band, watchlist_candidates

    registry = Registry(lake.root, MODEL_NAME)
    plan = scoring_plan(registry.cards(), months, spec_hash(config))
    unscored = [m for m in months if m not in plan]
    if unscored:
        progress(f"analyse: churn scores NULL for {', '.join(f'{m:%Y-%m}' for m in unscored)}: no model in the "
                 "registry whose labels were all known by that month's end (`crm train` fits what the complete "
                 "months allow, then `crm analyse --rescore`; `crm run` does both)")
    models = {c.version: registry.load(c.version)[c.algorithm] for c in {c.version: c for c in plan.values()}.values()}
    with stage("churn_scoring"):
        scores = score_in_spark(features, models, {m: c.version for m, c in plan.items()})
        bands = [(float(c), str(n)) for c, n in config["risk_bands"]["bands"]]
        scored = rows.join(scores, ["month", "subscriber_id"], "left").withColumn(
            "churn_risk_band", risk_band(F.col("churn_score"), bands)).localCheckpoint(eager=True)

    w = config["watchlist"]
    listed = watchlist_candidates(scored, w)
    explained = listed.select("month", "subscriber_id", "churn_model_version").join(
        features, ["month", "subscriber_id"])
    reasons = reasons_in_spark(explained, models, int(w["max_reasons"]))
    actions = F.create_map(*[x for k, v in sorted(config["actions"].items()) for x in (F.lit(k), F.lit(v))])
    watchlist = listed.join(reasons, ["month", "subscriber_id"], "left").select(
        "month", "subscriber_id", "msisdn_key", "churn_score", "churn_risk_band", "clv_fen", "value_segment",
        "expected_loss_fen", "top_reasons", actions[F.col("value_segment")].alias("recommended_action"),
        "priority_rank", "control_group", "churn_model_version", "payment_type",
    )
    # the scores as checkpointed in `scored`: `scores` would run the models over every row again
    drift = model_drift(features, scored, plan, float(config["drift"]["psi_threshold"]))
    return scored, watchlist, drift


DRIFT_DDL = ("month date, model_version string, feature string, psi double, threshold double, flagged boolean, "
             "reference_rows long, month_rows long")


def model_drift(features: DataFrame, scores: DataFrame, plan: Mapping[date, ModelCard], threshold: float) -> DataFrame:
    """PSI of every feature and of the score between each model's training sample and each month it
    scored (`scores`: month, subscriber_id, churn_score). Only per-bin counts reach the driver
    (months x features x bins rows)."""
    from crm_pipeline.transforms.marts.churn import feature_bins

    spark = features.sparkSession
    rows = []
    by_version: dict[str, list[date]] = {}
    for m, c in plan.items():
        by_version.setdefault(c.version, []).append(m)
    for version, months in sorted(by_version.items()):
        card = plan[months[0]]
        ref = card.drift_reference
        frame = features.where(F.col("month").isin(months)).join(
            scores.select("month", "subscriber_id", "churn_score"), ["month", "subscriber_id"], "left")
        counts = feature_bins(frame, {f: ref[f]["edges"] for f in ref}).collect()
        per: dict[tuple, np.ndarray] = {}
        for r in counts:
            key = (r.month, r.feature)
            per.setdefault(key, np.zeros(len(ref[r.feature]["shares"])))[r.bin] += r.n
        for (month, feature), n in sorted(per.items()):
            value = round(psi(ref[feature]["shares"], n / n.sum()), 6)
            rows.append((month, version, feature, value, threshold, value > threshold, card.n_train, int(n.sum())))
    return spark.createDataFrame(rows, DRIFT_DDL)


def print_churn_summary(lake: LakeLayout, tables: Mapping[str, DataFrame], months: list[date],
                        progress: Callable[[str], None] = print) -> None:
    """Churn lines of the run summary: which model scored which month with its out-of-time metrics,
    the latest month's risk bands, watch list, lost customers and drifted features."""
    latest = max(months)
    sm = tables["subscriber_month"]
    used = dict(sm.where(F.col("churn_model_version").isNotNull()).groupBy("month").agg(
        F.max("churn_model_version")).collect())
    cards = {c.version: c for c in Registry(lake.root, MODEL_NAME).cards()}
    unscored = [m for m in months if m not in used]
    if unscored:
        progress(f"churn scores: none for {', '.join(f'{m:%Y-%m}' for m in unscored)} (no model whose labels "
                 "were all known by the month's end)")
    for version in sorted(set(used.values()), key=lambda v: (min(m for m, x in used.items() if x == v), v)):
        c = cards.get(version)
        scored = ", ".join(f"{m:%Y-%m}" for m in sorted(m for m, v in used.items() if v == version))
        if c is None:
            progress(f"churn model {version}: scored {scored}")
            continue
        m, b = c.metrics[c.algorithm], c.metrics[c.baseline_algorithm]
        progress(f"churn model {version} ({c.algorithm}, test {c.test_month[:7]}): AUC {_f(m['auc'])} "
                 f"(logistic baseline {_f(b['auc'])}), top-decile lift {_f(m['top_decile_lift'], 2)}, "
                 f"EMP {_f(m['emp'], 2)} CNY, Brier {_f(m['brier'], 4)}; scored {scored}")
    if latest in used:
        bands = dict(sm.where((F.col("month") == F.lit(latest)) & F.col("churn_risk_band").isNotNull())
                     .groupBy("churn_risk_band").count().collect())
        wl = tables["churn_watchlist"].where(F.col("month") == F.lit(latest)).agg(
            F.count(F.lit(1)).alias("n"), F.sum(F.col("control_group").cast("int")).alias("control"),
            F.sum("expected_loss_fen").alias("loss")).collect()[0]
        progress(f"churn risk {latest:%Y-%m}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(bands.items()))
                 + f"; watch list {wl.n:,} subscribers ({wl.control or 0:,} held out as control), expected loss "
                 f"CNY {(wl.loss or 0) / 100:,.0f}")
        flagged = tables["model_drift"].where((F.col("month") == F.lit(latest)) & F.col("flagged")).orderBy(
            F.col("psi").desc()).collect()
        progress(f"model drift {latest:%Y-%m}: " + (", ".join(f"{r.feature} PSI {r.psi:.2f}" for r in flagged)
                                                   if flagged else "no feature above the PSI threshold"))
    lost = dict(tables["lost_customers"].where(F.col("month") == F.lit(latest)).groupBy(
        F.coalesce("terminate_reason", F.lit("UNKNOWN"))).count().collect())
    progress(f"lost customers {latest:%Y-%m}: {sum(lost.values()):,}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(lost.items())) + ")" if lost else ""))
