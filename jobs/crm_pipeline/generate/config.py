"""Every option of the synthetic BOSS-export generator, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GeneratorConfig:
    """Options of ``crm generate``; the defaults are the documented realistic shape.

    Rates are per record unless stated; churn rates are per calendar month (terminations
    with status_date in the month / subscriptions active at month open).
    """

    landing: Path
    subscribers: int
    start: date
    days: int
    seed: int = 42
    # usage: mean records per active subscriber and day
    voice_per_day: float = 5.0
    sms_per_day: float = 2.0
    data_per_day: float = 10.0
    # lifecycle
    prepaid_churn: float = 0.028
    postpaid_churn: float = 0.009
    churn_lag_min: int = 30
    churn_lag_max: int = 75
    friend_churn_lift: float = 1.0
    friend_churn_days: int = 60
    postpaid_share: float = 0.40
    enterprise_share: float = 0.08
    upgrade_rate: float = 0.03
    suspend_rate: float = 0.01
    reassign_share: float = 0.10
    reassign_after_days: int = 30
    # value
    spend_median_fen: int = 2800
    spend_sigma: float = 1.25
    enterprise_spend_factor: float = 2.5
    # care and surveys
    ticket_rate: float = 0.05
    complaint_share: float = 0.40
    regulator_share: float = 0.03
    ticket_max_resolve_days: int = 5
    survey_rate: float = 0.001
    survey_weights: tuple[float, float, float] = (0.35, 0.25, 0.40)
    survey_noise: float = 0.6
    # billing
    bill_run_day: int = 2
    bill_correction_day: int = 10
    # delivery quirks
    late_rate: float = 0.02
    dup_rate: float = 0.001
    bad_rate: float = 0.0002
    prefix_share: float = 0.01
    max_rows_per_file: int = 200_000
    gbk_share: float = 0.5
    cdr_gzip_share: float = 0.8
    other_gzip_share: float = 0.15
    crlf_share: float = 0.1
    # feeds whose last day's delivery is left without its control file (still being written, so
    # late: what `crm status` reports)
    withhold_control: tuple[str, ...] = ()
    # plumbing (not part of the generated content)
    schema_dir: Path | None = None
    progress: str = "day"

    def __post_init__(self) -> None:
        problems = []
        if self.subscribers < 10:
            problems.append(f"subscribers must be >= 10, got {self.subscribers}")
        if self.days < 1:
            problems.append(f"days must be >= 1, got {self.days}")
        for name in ("prepaid_churn", "postpaid_churn", "late_rate", "dup_rate", "bad_rate",
                     "prefix_share", "gbk_share", "cdr_gzip_share", "other_gzip_share",
                     "crlf_share", "postpaid_share", "enterprise_share", "reassign_share",
                     "complaint_share", "regulator_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be within [0, 1], got {value}")
        for name in ("voice_per_day", "sms_per_day", "data_per_day", "ticket_rate",
                     "survey_rate", "upgrade_rate", "suspend_rate", "spend_sigma"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        from crm_pipeline.feeds import load_feeds

        unknown = sorted(set(self.withhold_control) - set(load_feeds()))
        if unknown:
            problems.append(f"withhold_control names no feed: {', '.join(unknown)}")
        if not 1 <= self.bill_run_day <= 28:
            problems.append(f"bill_run_day must be within 1..28, got {self.bill_run_day}")
        if not 1 <= self.bill_correction_day <= 28:
            problems.append(f"bill_correction_day must be within 1..28, got {self.bill_correction_day}")
        if not 0 <= self.ticket_max_resolve_days <= 5:
            problems.append(f"ticket_max_resolve_days must be within 0..5, got {self.ticket_max_resolve_days}")
        if not 1 <= self.churn_lag_min <= self.churn_lag_max:
            problems.append(f"need 1 <= churn_lag_min <= churn_lag_max, got "
                            f"{self.churn_lag_min}..{self.churn_lag_max}")
        if self.max_rows_per_file < 1:
            problems.append(f"max_rows_per_file must be >= 1, got {self.max_rows_per_file}")
        if len(self.survey_weights) != 3:
            problems.append(f"survey_weights needs 3 values, got {self.survey_weights}")
        if self.progress not in ("day", "month", "none"):
            problems.append(f"progress must be day, month or none, got {self.progress!r}")
        if problems:
            raise ValueError("invalid generator options: " + "; ".join(problems))

    def content_options(self) -> dict[str, Any]:
        """The options that shape the generated files (paths and progress left out), JSON-ready."""
        skip = {"landing", "schema_dir", "progress"}
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in skip:
                continue
            value = getattr(self, f.name)
            if isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def config_as_dict(config: GeneratorConfig) -> dict[str, Any]:
    """All options, JSON-ready (paths as strings)."""
    raw = asdict(config)
    raw["landing"] = str(config.landing)
    raw["schema_dir"] = None if config.schema_dir is None else str(config.schema_dir)
    raw["start"] = config.start.isoformat()
    raw["survey_weights"] = list(config.survey_weights)
    return raw
