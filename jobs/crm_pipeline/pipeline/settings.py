"""Analytics parameters from config/analytics.json, typed once and passed down as arguments."""

from __future__ import annotations

from dataclasses import dataclass

from crm_pipeline.settings import config_section
from crm_pipeline.transforms.marts.clv import ClvSettings
from crm_pipeline.transforms.marts.key_accounts import HealthSettings
from crm_pipeline.transforms.marts.value import SEGMENTS, ValueSettings


@dataclass(frozen=True)
class AnalyticsSettings:
    """Every section of the analytics config the monthly marts use."""

    version: str
    value: ValueSettings
    strategies: dict
    health: HealthSettings
    clv: ClvSettings
    migration: dict
    satisfaction: dict
    churn: dict

    @classmethod
    def from_config(cls, raw: dict) -> AnalyticsSettings:
        strategies = raw["segment_strategies"]
        missing = set(SEGMENTS) - set(strategies)
        if missing:
            raise ValueError(f"segment_strategies: no strategy for {sorted(missing)}")
        return cls(
            version=str(raw.get("version", "unversioned")),
            value=ValueSettings.from_config(raw["value_segments"]),
            strategies=dict(strategies),
            health=HealthSettings.from_config(raw["key_accounts"]),
            clv=ClvSettings.from_config(raw["clv"]),
            migration=dict(raw["migration"]),
            satisfaction=config_section(raw["satisfaction"]),
            churn=churn_settings(raw["churn"]),
        )


def churn_settings(raw: dict) -> dict:
    """The `churn` section, checked: every segment has an action, risk bands run highest first,
    the boosting has at least two folds and every setting, and the control share is a share."""
    missing = set(SEGMENTS) - set(raw["actions"])
    if missing:
        raise ValueError(f"churn.actions: no recommended action for {sorted(missing)}")
    cuts = [float(c) for c, _ in raw["risk_bands"]["bands"]]
    if cuts != sorted(cuts, reverse=True) or cuts[-1] != 0.0:
        raise ValueError(f"churn.risk_bands.bands: cut points must run from highest to 0.0, got {cuts}")
    folds = int(raw["gradient_boosting"]["folds"])
    if folds < 2:
        raise ValueError(f"churn.gradient_boosting.folds must be at least 2 (one fold stops, the rest fit), got {folds}")
    from crm_pipeline.models.churn import boosting_candidates

    for candidate in boosting_candidates(raw["gradient_boosting"]):
        missing = {"max_iter", "learning_rate", "max_depth", "min_samples_leaf", "l2_regularization",
                   "n_iter_no_change", "random_state"} - set(candidate)
        if missing:
            raise ValueError(f"churn.gradient_boosting: no value (fixed or in `search`) for {sorted(missing)}")
    share = float(raw["watchlist"]["control_share"])
    if not 0.0 <= share < 1.0:
        raise ValueError(f"churn.watchlist.control_share must be in [0, 1), got {share}")
    return dict(raw)


def analytics_settings() -> AnalyticsSettings:
    """Read and type `CRM_ANALYTICS_CONFIG` (default config/analytics.json)."""
    from crm_pipeline.settings import load_analytics_config

    return AnalyticsSettings.from_config(load_analytics_config())
