"""Every published mart has one definition (schemas/tables), a GX suite and a place in the build."""

from __future__ import annotations

import json

from crm_pipeline.feeds import SPARK_COLUMN_TYPES, table_spec
from crm_pipeline.pipeline.churn import MODEL_TABLES
from crm_pipeline.pipeline.marts import MART_TABLES
from crm_pipeline.settings import resource_dir


def _crm_specs() -> set[str]:
    folder = resource_dir("schemas") / "tables"
    return {p.stem for p in folder.glob("*.json") if json.loads(p.read_text(encoding="utf-8"))["schema"] == "crm"}


GOLD_TABLES = (*MART_TABLES, *MODEL_TABLES)


def test_every_crm_table_spec_is_built_and_every_built_mart_has_a_spec():
    assert _crm_specs() == {n for n in GOLD_TABLES if table_spec(n).schema == "crm"}
    assert {table_spec(n).schema for n in GOLD_TABLES} == {"crm", "crm_ops", "gold"}


def test_every_mart_has_a_gold_suite_that_checks_its_keys():
    from crm_pipeline.quality.gx import load_suite_definition

    for name in GOLD_TABLES:
        assert (resource_dir("expectations") / f"gold_{name}.json").is_file(), name
        suite = load_suite_definition(f"gold_{name}")  # its key checks come from the definition
        types = {e["type"] for e in suite["expectations"]}
        assert types & {"expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"}, name


def test_specs_name_a_partition_column_of_date_type_and_known_types():
    for name in GOLD_TABLES:
        spec = table_spec(name)
        cols = {c.name: c for c in spec.columns}
        assert spec.partition in cols and cols[spec.partition].type == "date", name
        assert {c.type for c in spec.columns} <= SPARK_COLUMN_TYPES.keys(), name
        assert all(c.description for c in spec.columns), name


def test_subscriber_month_spec_holds_every_contract_column():
    contract = ("month subscriber_id msisdn_key customer_id group_id city_code brand plan_id payment_type "
                "network_gen tenure_months status_at_month_end revenue_fen arpu_3m_fen voice_mou sms_count "
                "data_mb recharge_fen complaint_count current_value_index potential_value_index value_segment "
                "clv_fen churn_score churn_risk_band churned_in_month").split()
    assert set(contract) <= set(table_spec("subscriber_month").column_names)


CONTRACT = {  # warehouse-contract.md, "Tables": the columns each table must contain at least
    "kpi_month": "month dimension dimension_value active_subscribers opening_subscribers closing_subscribers "
                 "gross_adds churned_subscribers churn_rate revenue_fen arpu_fen voice_mou_per_sub data_mb_per_sub",
    "segment_summary": "month value_segment subscribers revenue_fen revenue_share arpu_fen avg_churn_score "
                       "recommended_strategy",
    "revenue_concentration": "month top20_revenue_share gini subscribers",
    "key_account_month": "month group_id lines active_lines revenue_fen revenue_share revenue_change_3m "
                         "churned_lines complaint_count health_score",
    "migration_candidates": "month subscriber_id msisdn_key network_gen target_gen propensity data_mb_3m reason",
    "satisfaction_drivers": "period_start period_end driver coefficient std_coefficient p_value r_squared respondents",
    "churn_watchlist": "month subscriber_id msisdn_key churn_score clv_fen value_segment expected_loss_fen top_reasons "
                       "recommended_action priority_rank",
    "lost_customers": "month subscriber_id msisdn_key terminate_reason tenure_months last_3m_revenue_fen "
                      "value_segment_before offnet_share_before complaints_before winback_priority",
    "churn_model": "model_version trained_at train_months test_month auc top_decile_lift emp brier n_train n_test "
                   "feature_list",
}


def test_churn_features_spec_lists_the_model_inputs_in_order():
    from crm_pipeline.models.churn import FEATURES

    assert table_spec("churn_features").column_names == ["month", "subscriber_id", *FEATURES]


def test_contract_tables_hold_their_contract_columns():
    for name, columns in CONTRACT.items():
        assert set(columns.split()) <= set(table_spec(name).column_names), name
