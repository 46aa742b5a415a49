"""Synthetic BOSS deliveries for development, tests and demos: ``crm generate``.

Writes a landing zone that follows ``boss-exports.md`` (daily snapshots, CDRs, recharges,
tickets, surveys, monthly bills, control files), with planted churn, value and satisfaction
mechanisms and a documented sprinkle of delivery quirks and bad records. The ground truth
goes to ``<landing>/_generator/truth.json``. See docs/generator.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from .config import GeneratorConfig
from .defects import REASONS

__all__ = ["GeneratorConfig", "REASONS", "add_arguments", "config_from_args", "generate", "run"]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def _weights(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated weights, got {text!r}")
    return tuple(float(p) for p in parts)  # type: ignore[return-value]


# option name -> (type, help); defaults come from GeneratorConfig
_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("voice_per_day", float, "mean voice CDRs per active subscriber and day"),
    ("sms_per_day", float, "mean SMS CDRs per active subscriber and day"),
    ("data_per_day", float, "mean data sessions per active subscriber and day"),
    ("prepaid_churn", float, "monthly churn rate of prepaid lines"),
    ("postpaid_churn", float, "monthly churn rate of postpaid lines"),
    ("churn_lag_min", int, "min days from a churn decision to the termination"),
    ("churn_lag_max", int, "max days from a churn decision to the termination"),
    ("friend_churn_lift", float, "hazard lift per churned contact (up to 3 contacts)"),
    ("friend_churn_days", int, "days a churned contact lifts a subscriber's hazard"),
    ("postpaid_share", float, "share of person lines that are postpaid"),
    ("enterprise_share", float, "share of lines in enterprise groups"),
    ("upgrade_rate", float, "monthly 4G->5G upgrade rate (3G->4G half, 2G->3G a quarter)"),
    ("suspend_rate", float, "monthly rate of temporary suspensions (3-20 days)"),
    ("reassign_share", float, "share of new lines given a released number"),
    ("reassign_after_days", int, "days a released number rests before reassignment"),
    ("spend_median_fen", int, "median monthly spend of a person line, fen"),
    ("spend_sigma", float, "sigma of the log-normal monthly spend"),
    ("enterprise_spend_factor", float, "spend multiplier of enterprise lines"),
    ("ticket_rate", float, "tickets per subscriber and month"),
    ("complaint_share", float, "share of tickets that are complaints (baseline)"),
    ("regulator_share", float, "share of complaints escalated to the regulator (baseline)"),
    ("ticket_max_resolve_days", int, "max days from ticket creation to resolution (0-5)"),
    ("survey_rate", float, "share of active subscribers surveyed per day (Mon-Sat)"),
    ("survey_noise", float, "standard deviation of the overall-score noise"),
    ("bill_run_day", int, "day of month M+1 on which the bill of month M is delivered"),
    ("bill_correction_day", int, "day of M+1 on which the first complete bill month is re-delivered"),
    ("late_rate", float, "share of CDRs delivered 1-3 days late"),
    ("dup_rate", float, "share of event records re-sent as exact duplicates"),
    ("bad_rate", float, "share of bad records planted per event record"),
    ("prefix_share", float, "share of msisdns written with a +86 or 86 prefix"),
    ("max_rows_per_file", int, "rows per data file before a delivery is split"),
    ("gbk_share", float, "share of subscriber and plan deliveries encoded GBK"),
    ("cdr_gzip_share", float, "share of CDR deliveries gzip-compressed"),
    ("other_gzip_share", float, "share of other deliveries gzip-compressed"),
    ("crlf_share", float, "share of deliveries with CRLF line endings"),
)


def _feeds(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``crm generate`` options to ``parser``."""
    defaults = GeneratorConfig(landing=Path("."), subscribers=10, start=date(2000, 1, 1), days=1)
    parser.add_argument("--landing", type=Path, required=True, help="landing-zone folder to write")
    parser.add_argument("--subscribers", type=int, required=True, help="opening subscriptions")
    parser.add_argument("--start", type=_date, required=True, help="first business date, YYYY-MM-DD")
    parser.add_argument("--days", type=int, required=True, help="business dates to generate")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    for name, typ, text in _OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=getattr(defaults, name),
                            help=f"{text} (default %(default)s)")
    parser.add_argument("--survey-weights", dest="survey_weights", type=_weights,
                        default=defaults.survey_weights,
                        help="overall-score weights of service,quality,value (default 0.35,0.25,0.40)")
    parser.add_argument("--withhold-control", dest="withhold_control", type=_feeds, default=(),
                        metavar="FEED[,FEED]",
                        help="leave the last day's delivery of these feeds without its control file, as if still "
                             "being written: it is not loaded and the feed shows as late in `crm status`")
    parser.add_argument("--schema-dir", type=Path, default=None, help="feed schemas folder (default: the repo's)")
    parser.add_argument("--progress", choices=("day", "month", "none"), default="day",
                        help="progress lines on stderr (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    """The ``GeneratorConfig`` of parsed ``crm generate`` arguments."""
    names = ["landing", "subscribers", "start", "days", "seed", "survey_weights", "schema_dir", "progress",
             "withhold_control"]
    names += [name for name, _, _ in _OPTIONS]
    return GeneratorConfig(**{name: getattr(args, name) for name in names})


def generate(config: GeneratorConfig, on_progress=None) -> dict:
    """Write the synthetic landing zone for ``config``; return a summary (lines per feed, files,
    seconds, records/s). ``on_progress`` receives one text line per day or month."""
    from .engine import Generator

    return Generator(config, on_progress=on_progress).run()


def run(args: argparse.Namespace) -> int:
    """``crm generate`` entry point: build the config, generate, print the summary to stderr."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"crm generate: {exc}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        from crm_pipeline.progress import say

        say(f"[generate] {line}", file=sys.stderr)

    summary = generate(config, on_progress=None if config.progress == "none" else progress)
    print(f"[generate] wrote {summary['records_total']:,} lines in {summary['files']:,} files to "
          f"{summary['landing']} in {summary['seconds']:.1f} s ({summary['records_per_second']:,.0f} records/s)",
          file=sys.stderr)
    for feed, count in summary["records"].items():
        print(f"[generate]   {feed:<11} {count:>12,}", file=sys.stderr)
    print(f"[generate] ground truth: {Path(summary['landing']) / '_generator' / 'truth.json'}", file=sys.stderr)
    return 0
