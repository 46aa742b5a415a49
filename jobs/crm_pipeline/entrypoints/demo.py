"""`crm demo`: generate a synthetic operator, run every layer, publish, and show how to query it."""

from __future__ import annotations

import argparse
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import iso_date, progress, setup_logging, spark_session
from crm_pipeline.settings import REPO_ROOT, LakeLayout

DEFAULT_DIR = REPO_ROOT / "var" / "demo"

EXAMPLE_QUERIES = (
    ("Subscribers, churn and ARPU per month",
     "SELECT month, active_subscribers, churned_subscribers, round(churn_rate * 100, 2) AS churn_pct, "
     "round(arpu_fen / 100, 2) AS arpu_cny FROM crm.kpi_month WHERE dimension = 'ALL' ORDER BY month"),
    ("Prepaid against postpaid in the latest month",
     "SELECT dimension_value AS payment_type, active_subscribers, round(churn_rate * 100, 2) AS churn_pct, "
     "round(arpu_fen / 100, 2) AS arpu_cny FROM crm.kpi_month WHERE dimension = 'payment_type' "
     "AND month = (SELECT max(month) FROM crm.kpi_month) ORDER BY 1"),
    ("Value segments in the latest month, with the strategy for each",
     "SELECT value_segment, subscribers, round(100 * revenue_share, 1) AS revenue_pct, "
     "round(arpu_fen / 100, 2) AS arpu_cny, round(avg_clv_fen / 100) AS avg_clv_cny, recommended_strategy "
     "FROM crm.segment_summary WHERE month = (SELECT max(month) FROM crm.segment_summary) ORDER BY revenue_pct DESC"),
    ("Revenue concentration per month",
     "SELECT month, subscribers, round(100 * top20_revenue_share, 1) AS top20_pct, round(gini, 3) AS gini "
     "FROM crm.revenue_concentration ORDER BY month"),
    ("Key accounts in the worst health in the latest month",
     "SELECT group_id, lines, round(revenue_fen / 100, 2) AS revenue_cny, health_score, health_reasons "
     "FROM crm.key_account_month WHERE month = (SELECT max(month) FROM crm.key_account_month) "
     "ORDER BY health_score, group_id LIMIT 5"),
    ("Churn models: out-of-time evaluation against the logistic baseline",
     "SELECT model_version, train_months, test_month, labels_known_through AS scores_from, round(auc, 3) AS auc, "
     "round(baseline_auc, 3) AS baseline_auc, round(top_decile_lift, 2) AS lift10, round(emp, 2) AS emp_cny, "
     "round(brier, 4) AS brier FROM crm.churn_model WHERE in_use ORDER BY test_month"),
    ("Churn watch list, latest month: who to call first, and why",
     "SELECT priority_rank, subscriber_id, value_segment, round(churn_score, 3) AS churn_score, "
     "round(expected_loss_fen / 100) AS expected_loss_cny, control_group, "
     "json_extract_string(top_reasons, '$[0].reason') AS first_reason "
     "FROM crm.churn_watchlist WHERE month = (SELECT max(month) FROM crm.churn_watchlist) "
     "ORDER BY priority_rank LIMIT 8"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"demo folder (default {DEFAULT_DIR})")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--start", type=iso_date, default=iso_date("2026-01-01"))
    parser.add_argument("--days", type=int, default=247,
                        help="days of deliveries (default 247: January-August complete, 8 months, and the first "
                             "days of September)")
    parser.add_argument("--late-feed", default="ticket",
                        help="feed whose last delivery is left without its control file, still being written, "
                             "so `crm status` shows it late (default ticket; '' for none)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.entrypoints.run import run_pipeline
    from crm_pipeline.generate import GeneratorConfig, generate
    from crm_pipeline.settings import msisdn_hmac_key

    landing, lake, wh = args.dir / "landing", args.dir / "lake", args.dir / "warehouse.duckdb"
    t0 = time.monotonic()
    if (landing / "_generator" / "truth.json").is_file():
        progress(f"demo: reusing the generated landing zone {landing} (delete it to regenerate)")
    else:
        progress(f"demo: generating {args.subscribers:,} subscribers x {args.days} days into {landing}")
        generate(GeneratorConfig(landing=landing, subscribers=args.subscribers, start=args.start,
                                 days=args.days, seed=args.seed, progress="month",
                                 withhold_control=tuple(f for f in [args.late_feed] if f)))
    key = msisdn_hmac_key(allow_demo=True)
    layout, ctx = LakeLayout(str(lake)), ops.RunContext(ops.new_run_id("demo"), "cli", "run")
    spark = spark_session(layout, ctx)
    code = run_pipeline(spark, landing, layout, f"duckdb:///{wh}", ctx, key)
    spark.stop()
    show(wh, time.monotonic() - t0, lake)
    show_status(layout, landing, args.start + timedelta(days=args.days))
    show_report(layout, args.dir)
    return code


def show_report(lake: LakeLayout, folder: Path) -> None:
    """Write the report of the latest analysed month beside the warehouse and say where it is."""
    from crm_pipeline.report import write_report
    from crm_pipeline.report.data import analysed_months

    months = analysed_months(lake)
    if not months:
        progress("\n-- no month analysed, so no report")
        return
    path, month = write_report(lake, folder / f"report-{months[-1]:%Y-%m}.html", months[-1])
    progress(f"\n-- the CRM report of {month:%B %Y} (charts; opens offline in any browser): {path}\n"
             f"   another month: crm report --lake {lake.root} --month YYYY-MM --out FILE.html")


def show_status(lake: LakeLayout, landing: Path, morning_after: date) -> None:
    """`crm status` as the operations team would read it the morning after the last delivery."""
    from crm_pipeline import status

    as_of = datetime.combine(morning_after, datetime.min.time()).replace(hour=9)
    command = f"crm status --lake {lake.root} --landing {landing} --as-of {as_of:%Y-%m-%dT%H:%M}"
    progress(f"\n-- the operations view: {command}")
    progress(status.render(status.status(lake, as_of, landing=str(landing)), f"lake {lake.root}", status.DAYS))


def show(wh: Path, seconds: float, lake: Path) -> None:
    from crm_pipeline.publish.warehouse import duckdb_connect

    progress(f"\ndemo finished in {seconds / 60:.1f} min")
    progress(f"  warehouse : {wh}  (crm, crm_ops)")
    progress(f"  restricted: {wh.with_name(wh.stem + '_restricted' + wh.suffix)}  (crm_restricted, mode 0600)")
    progress(f"  lake      : {lake}  (bronze/ silver/ gold/ ops/ restricted/)")
    con = duckdb_connect(wh, read_only=True)
    try:
        for title, sql in EXAMPLE_QUERIES:
            progress(f"\n-- {title}\n{sql};")
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
            if not rows:
                progress("  (no rows yet)")
                continue
            widths = [max(len(str(v)) for v in (n, *(r[i] for r in rows))) for i, n in enumerate(names)]
            progress("  " + "  ".join(str(n).ljust(w) for n, w in zip(names, widths)))
            for r in rows:
                progress("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    finally:
        con.close()
    progress(f"\nQuery it yourself: .venv/bin/python -c \"import duckdb; "
             f"print(duckdb.connect('{wh}', read_only=True).sql('FROM crm.kpi_month LIMIT 5'))\"")
