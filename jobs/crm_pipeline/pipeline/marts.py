"""Every monthly gold mart from subscriber_month rows: CLV, KPIs, segments, concentration,
key accounts, migration candidates and satisfaction drivers (wiring; logic in transforms/ and models/)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline.columns import isin
from crm_pipeline.feeds import conform, table_spec
from crm_pipeline.io import delta
from crm_pipeline.months import add_months
from crm_pipeline.pipeline.settings import AnalyticsSettings
from crm_pipeline.pipeline.tables import silver
from crm_pipeline.settings import LakeLayout
from crm_pipeline.stages import stage
from crm_pipeline.transforms.marts.clv import (
    CLV_MODEL_SCHEMA,
    clv_exposures,
    derl_table,
    fit_clv_models,
    with_clv,
)
from crm_pipeline.transforms.marts.concentration import revenue_concentration, revenue_lorenz
from crm_pipeline.transforms.marts.key_accounts import key_account_month
from crm_pipeline.transforms.marts.reconciliation import billing_reconciliation
from crm_pipeline.transforms.marts.kpi_month import kpi_month
from crm_pipeline.transforms.marts.segments import segment_migration, segment_summary
from crm_pipeline.transforms.marts.value import SEGMENTS

#: Gold tables built each month, in build order; each has schemas/tables/<name>.json.
MART_TABLES = (
    "subscriber_month", "kpi_month", "segment_summary", "segment_migration", "revenue_concentration",
    "revenue_lorenz", "key_account_month", "clv_model", "migration_candidates", "migration_model",
    "satisfaction_drivers", "churn_features", "churn_watchlist", "lost_customers", "model_drift",
    "billing_reconciliation",
)
PAYMENT_TYPES = ("PREPAID", "POSTPAID")


def with_lifetime_value(spark: SparkSession, rows: DataFrame, every: DataFrame, months: list[date],
                        settings: AnalyticsSettings) -> tuple[DataFrame, DataFrame]:
    """Fit the sBG per month and cohort group on the exposures at hand, add clv_fen to `rows`.

    Returns (rows with clv_fen, clv_model rows). The fit reads only aggregated exposures and the
    distinct tenures per month on the driver.
    """
    exposures = [tuple(r) for r in clv_exposures(every).collect()]
    groups = [(p, s) for p in PAYMENT_TYPES for s in SEGMENTS]
    models = fit_clv_models(exposures, months, groups, settings.clv)
    tenures = {r.month: list(r.t) for r in rows.groupBy("month").agg(F.collect_set("tenure_months").alias("t")).collect()}
    rows = with_clv(rows, derl_table(spark, models, tenures, settings.clv))
    return rows, spark.createDataFrame(models, CLV_MODEL_SCHEMA)


def _months_before(every: DataFrame, months: list[date], n: int) -> DataFrame:
    """The rows of `every` in the months `n` months before `months`."""
    return every.where(isin("month", [add_months(m, -n) for m in months]))


def build_marts(
    spark: SparkSession,
    lake: LakeLayout,
    rows: DataFrame,
    every: DataFrame,
    months: list[date],
    settings: AnalyticsSettings,
    progress: Callable[[str], None] = print,
) -> dict[str, DataFrame]:
    """Gold frames keyed by table name, each conformed to its published schema (subscriber_month
    keeps the extra columns that later months read back). `rows` are the batch's subscriber
    months with value segments; `every` the rows of all months at hand (HISTORY_COLUMNS_ALL)."""
    from crm_pipeline.pipeline.migration import migration_tables
    from crm_pipeline.pipeline.monthly import GOLD_EXTRAS
    from crm_pipeline.transforms.marts.satisfaction import satisfaction_drivers_frame, survey_moments

    from crm_pipeline.pipeline.churn import churn_marts

    with stage("subscriber_month"):  # value components, indices and segments
        # cached, not checkpointed: `every` holds the same plan and reads the cache too
        rows = rows.persist()
        rows.count()
    with stage("clv"):
        rows, clv_model = with_lifetime_value(spark, rows, every, months, settings)
    progress("analyse: churn features, scores, watch list and lost customers")
    rows, churn = churn_marts(spark, lake, rows, every, months, settings.churn, progress)
    spec = table_spec("subscriber_month")
    published = conform(rows, spec)
    extras = [rows[c] for c in GOLD_EXTRAS]
    sm = rows.select(*published.columns, *extras).persist()
    tables: dict[str, DataFrame] = {"subscriber_month": sm}
    tables["kpi_month"] = kpi_month(sm)
    tables["segment_summary"] = segment_summary(sm, settings.strategies)
    # the months these marts look back to, not every month at hand: fewer rows shuffled to join them
    tables["segment_migration"] = segment_migration(sm, _months_before(every, months, 1).select(
        "subscriber_id", "month", "value_segment"))
    tables["revenue_concentration"] = revenue_concentration(sm)
    tables["revenue_lorenz"] = revenue_lorenz(sm)
    tables["key_account_month"] = key_account_month(sm, _months_before(every, months, 3), settings.health)
    tables["clv_model"] = clv_model
    tables.update(churn)
    progress("analyse: migration candidates (one upgrade model per month, trained on earlier months)")
    with stage("migration"):
        tables["migration_candidates"], tables["migration_model"] = migration_tables(
            sm, every, months, settings.migration)
    tables["billing_reconciliation"] = billing_reconciliation(
        silver(spark, lake, "bill"), delta.read(spark, lake.gold("daily_usage_by_subscriber")), months)
    surveys = silver(spark, lake, "survey")
    tables["satisfaction_drivers"] = satisfaction_drivers_frame(
        survey_moments(surveys, months), int(settings.satisfaction["min_respondents"]))
    # Materialise every mart once and cut its lineage: writing gold/subscriber_month later would
    # otherwise make Spark recompute every cached frame that reads it (history) again.
    out = {}
    for name in MART_TABLES:
        df = tables[name] if name == "subscriber_month" else conform(tables[name], table_spec(name))
        with stage("marts", name):
            out[name] = df.localCheckpoint(eager=True)
    spark.catalog.clearCache()  # the intermediates above; the checkpoints stay
    return out
