"""Churn model ablation: what each feature theme adds, out of time, on a built lake.

    .venv/bin/python bench/churn_ablation.py --lake var/demo/lake

For every training window the lake's complete months allow (as `crm train` builds them), the
gradient-boosting model is fitted with all features, then without one theme at a time (calling
circle, trends, ...), and evaluated on the window's test month. AUC, top-decile lift and EMP are
pooled over windows (mean). The section "Ablation" (or `--section`) of docs/churn.md is replaced
with the table.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from report import replace_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=str(ROOT / "var" / "demo" / "lake"))
    parser.add_argument("--section", default="Ablation",
                        help="section of docs/churn.md to replace with the table (default %(default)s)")
    args = parser.parse_args()

    import numpy as np

    from crm_pipeline.io import delta
    from crm_pipeline.models.churn import FEATURE_GROUPS, FEATURES, ChurnParams, EmpParams, evaluate, fit_models, predict
    from crm_pipeline.pipeline.churn import training_sample, training_windows
    from crm_pipeline.pipeline.settings import analytics_settings
    from crm_pipeline.settings import LakeLayout, SparkSettings
    from crm_pipeline.spark import build_session
    from crm_pipeline.transforms.marts.churn import churn_labels

    spark = build_session(SparkSettings.from_env())
    lake = LakeLayout(args.lake)
    config = analytics_settings().churn
    features = delta.read(spark, lake.gold("churn_features"))
    sm = delta.read(spark, lake.gold("subscriber_month"))
    complete = sorted(r[0] for r in sm.select("month").distinct().collect())
    labels = churn_labels(sm.select("subscriber_id", "month", "closing", "churned_in_month", "terminate_reason"),
                          complete)
    labelled_months = sorted(r[0] for r in labels.select("month").distinct().collect())
    windows = training_windows(labelled_months, complete, config)
    sample = training_sample(features.join(labels, ["month", "subscriber_id"]), config)
    spark.stop()
    params, emp = ChurnParams.from_config(config), EmpParams.from_config(config["emp"])

    variants = {"all features": FEATURES}
    for theme, group in FEATURE_GROUPS.items():
        variants[f"without {theme}"] = tuple(f for f in FEATURES if f not in group)
    results: dict[str, list] = {}
    for name, feats in variants.items():
        for end, train_months, test in windows:
            tr, te = sample[sample["month"].isin(train_months)], sample[sample["month"] == test]
            models = fit_models(tr, tr["label"], params, feats)
            for algo, model in models.items():
                if algo != "gradient_boosting" and name != "all features":
                    continue
                ev = evaluate(te["label"].to_numpy(), predict(model, te, feats), emp)
                label = name if algo == "gradient_boosting" else "logistic baseline, all features"
                results.setdefault(label, []).append((ev.auc, ev.top_decile_lift, ev.emp, ev.brier))
    base = np.mean([r[0] for r in results["all features"]])
    lines = [
        f"`bench/churn_ablation.py --lake {args.lake}`, run {date.today()}: gradient boosting refitted without one "
        f"feature theme at a time, on the {len(windows)} training windows of the lake "
        f"(test months {', '.join(f'{t:%Y-%m}' for _, _, t in windows)}); metrics are means over the windows' "
        f"out-of-time test months ({sum(len(sample[sample['month'] == t]) for _, _, t in windows):,} test rows, "
        f"{int(sum(sample[sample['month'] == t]['label'].sum() for _, _, t in windows)):,} churners in all).",
        "",
        "| model | AUC | AUC change | top-decile lift | EMP (CNY/customer) | Brier |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rows in results.items():
        auc, lift, e, brier = (float(np.mean([r[i] for r in rows])) for i in range(4))
        lines.append(f"| {label} | {auc:.3f} | {auc - base:+.3f} | {lift:.2f} | {e:.2f} | {brier:.4f} |")
    replace_section(ROOT / "docs" / "churn.md", args.section, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
