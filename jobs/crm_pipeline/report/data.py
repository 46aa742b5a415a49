"""What a month's report reads: the gold marts and the ops tables of the lake, through delta-rs.

No Spark: every table the report needs is either small (one row per month, segment, key account,
model decile...) or read for one month and a handful of columns (`subscriber_month`), so a report
takes seconds and runs where only the lake is reachable. The quarantine is read for its feed,
day and reason only: its raw lines are restricted and never leave the lake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import pyarrow.dataset as ds

from crm_pipeline.errors import UsageError
from crm_pipeline.io import delta_rs
from crm_pipeline.months import add_months
from crm_pipeline.settings import LakeLayout

#: the columns of `subscriber_month` the report draws from (never msisdn_key or contact data)
SUBSCRIBER_COLUMNS = ["subscriber_id", "payment_type", "current_value_index", "potential_value_index",
                      "value_segment", "revenue_fen", "clv_fen", "churn_score", "churn_risk_band",
                      "churn_model_version", "tenure_months"]

#: months of history the trend charts show
TREND_MONTHS = 12


@dataclass(frozen=True)
class ReportData:
    """Every frame one month's report is drawn from. Monthly marts hold the report's month (and
    its predecessor where a change is shown); the `*_trend` frames hold up to TREND_MONTHS."""

    month: date
    months: list[date]  # every analysed month of the lake, oldest first
    kpi_trend: pd.DataFrame
    subscribers: pd.DataFrame
    segments: pd.DataFrame
    segment_migration: pd.DataFrame
    concentration_trend: pd.DataFrame
    lorenz: pd.DataFrame
    clv_model: pd.DataFrame
    models: pd.DataFrame  # the registry's model cards
    scoring_model: str | None  # version of the churn model that scored most of the month
    lift: pd.DataFrame  # of the model that scored the month
    calibration: pd.DataFrame
    drift: pd.DataFrame
    key_accounts: pd.DataFrame
    key_accounts_before: pd.DataFrame  # the month before, for the health trend
    watchlist: pd.DataFrame
    lost: pd.DataFrame
    migration_candidates: pd.DataFrame
    migration_model: pd.DataFrame
    satisfaction: pd.DataFrame  # the latest survey period that ended by the month's end
    reconciliation: pd.DataFrame
    deliveries: pd.DataFrame  # ingest accounting of the files the month's build read
    quarantine: pd.DataFrame  # feed, business_date, reject_reason of their rejected records
    checks: pd.DataFrame  # the latest result of every data-quality check of the month's dates



def analysed_months(lake: LakeLayout) -> list[date]:
    """Months with gold KPIs, oldest first."""
    table = delta_rs.read(lake.gold("kpi_month"), columns=["month"])
    if table is None or table.num_rows == 0:
        return []
    return sorted({_as_date(m) for m in table.column("month").to_pylist()})


def load(lake: LakeLayout, month: date | None = None) -> ReportData:
    """The report's frames for `month` (default: the latest analysed month). UsageError when the
    lake holds no analysed month, or not this one."""
    months = analysed_months(lake)
    if not months:
        raise UsageError(f"lake {lake.root} holds no analysed month (no gold kpi_month): run `crm run` "
                         "(or `crm analyse`) on it first")
    if month is None:
        month = months[-1]
    elif month not in months:
        raise UsageError(f"month {month:%Y-%m} has not been analysed in lake {lake.root}: analysed months are "
                         f"{months[0]:%Y-%m} to {months[-1]:%Y-%m} (a month is analysed once it is complete: "
                         "`crm status` says what it waits for)")
    before = add_months(month, -1)
    trend = [m for m in months if add_months(month, -TREND_MONTHS) < m <= month]
    subscribers = _gold(lake, "subscriber_month", [month], SUBSCRIBER_COLUMNS)
    models = _gold(lake, "churn_model")
    version = _mode(subscribers.get("churn_model_version"))
    lift = _gold(lake, "churn_model_lift")
    calibration = _gold(lake, "churn_model_calibration")
    if version is not None:
        lift = lift[lift["model_version"] == version]
        calibration = calibration[calibration["model_version"] == version]
    else:
        lift, calibration = lift.iloc[0:0], calibration.iloc[0:0]
    inputs = _month_deliveries(lake, month)
    key_accounts = _gold(lake, "key_account_month", [before, month])
    this_month = key_accounts["month"].map(_as_date) == month
    return ReportData(
        month=month,
        months=months,
        kpi_trend=_gold(lake, "kpi_month", trend),
        subscribers=subscribers,
        segments=_gold(lake, "segment_summary", trend),
        segment_migration=_gold(lake, "segment_migration", [month]),
        concentration_trend=_gold(lake, "revenue_concentration", trend),
        lorenz=_gold(lake, "revenue_lorenz", [month]),
        clv_model=_gold(lake, "clv_model", [month]),
        models=models,
        scoring_model=version,
        lift=lift,
        calibration=calibration,
        drift=_gold(lake, "model_drift", [month]),
        key_accounts=key_accounts[this_month].reset_index(drop=True),
        key_accounts_before=key_accounts[~this_month].reset_index(drop=True),
        watchlist=_gold(lake, "churn_watchlist", [month]),
        lost=_gold(lake, "lost_customers", [month]),
        migration_candidates=_gold(lake, "migration_candidates", [month]),
        migration_model=_gold(lake, "migration_model", [month]),
        satisfaction=_survey_period(_gold(lake, "satisfaction_drivers"), add_months(month, 1)),
        reconciliation=_gold(lake, "billing_reconciliation", [month]),
        deliveries=_deliveries(lake, inputs),
        quarantine=_quarantine(lake, inputs),
        checks=_checks(lake, month),
    )


def _gold(lake: LakeLayout, name: str, months: list[date] | None = None,
          columns: list[str] | None = None) -> pd.DataFrame:
    """A gold table (the rows of `months` when given) as pandas; before its first write, no rows
    and the columns of its definition (schemas/tables), so a section can say it has nothing yet."""
    from crm_pipeline.feeds import table_spec

    where = ds.field("month").isin(months) if months is not None else None
    table = delta_rs.read(lake.gold(name), columns=columns, filter=where)
    if table is None:
        return pd.DataFrame(columns=columns or table_spec(name).column_names)
    return table.to_pandas()


def _month_deliveries(lake: LakeLayout, month: date) -> list[str]:
    """The deliveries the latest build of `month` read (`ops/month_inputs`): its days, its late
    days and its bill."""
    table = delta_rs.read(lake.ops("month_inputs"), columns=["run_id", "delivery_id", "built_at"],
                          filter=ds.field("month") == month)
    if table is None or table.num_rows == 0:
        return []
    df = table.to_pandas()
    latest = df.loc[df["built_at"].idxmax(), "run_id"]
    return sorted(df.loc[df["run_id"] == latest, "delivery_id"].dropna().unique())


def _deliveries(lake: LakeLayout, delivery_ids: list[str]) -> pd.DataFrame:
    """The ingest accounting of those deliveries, one row per file (its latest load)."""
    columns = ["feed", "business_date", "source_file", "delivery_id", "finished_at", "status", "rows_read",
               "rows_loaded", "rows_quarantined", "rows_duplicate", "message"]
    where = ds.field("source_file").is_valid() & ds.field("delivery_id").isin(delivery_ids)
    table = delta_rs.read(lake.ops("pipeline_runs"), filter=where, columns=columns)
    if table is None:
        return pd.DataFrame(columns=columns)
    df = table.to_pandas().sort_values("finished_at")
    return df.drop_duplicates(["delivery_id", "source_file"], keep="last").reset_index(drop=True)


def _quarantine(lake: LakeLayout, delivery_ids: list[str]) -> pd.DataFrame:
    """Feed, day and reason of every record of those deliveries the ingest rejected."""
    columns = ["feed", "business_date", "reject_reason"]
    table = delta_rs.read(lake.quarantine, columns=columns, filter=ds.field("delivery_id").isin(delivery_ids))
    return pd.DataFrame(columns=columns) if table is None else table.to_pandas()


def _checks(lake: LakeLayout, month: date) -> pd.DataFrame:
    """The latest result of every check run on a business date (or month) of `month`."""
    end = add_months(month, 1)
    where = (ds.field("business_date") >= month) & (ds.field("business_date") < end)
    table = delta_rs.read(lake.ops("data_quality"), filter=where, columns=[
        "table_name", "business_date", "check_name", "success", "unexpected_count", "severity", "validated_at"])
    if table is None:
        return pd.DataFrame(columns=["table_name", "business_date", "check_name", "success", "unexpected_count",
                                     "severity"])
    df = table.to_pandas().sort_values("validated_at")
    return df.drop_duplicates(["table_name", "business_date", "check_name"], keep="last").reset_index(drop=True)


def _survey_period(drivers: pd.DataFrame, end: date) -> pd.DataFrame:
    """The drivers of the latest survey period that ended before `end`."""
    if drivers.empty:
        return drivers
    ends = drivers["period_end"].map(_as_date)
    eligible = ends[ends < end]
    if eligible.empty:
        return drivers.iloc[0:0]
    return drivers[ends == eligible.max()].reset_index(drop=True)


def _mode(values: pd.Series | None) -> str | None:
    if values is None:
        return None
    values = values.dropna()
    return str(values.mode().iloc[0]) if len(values) else None


def _as_date(value) -> date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value
