"""The data-quality summary printed at the end of a run: suites passed, warnings, failures, and
the records quarantined per feed and reason, all from the run's crm_ops rows and quarantine rows
(read with delta-rs: it works after a failed step too)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import logging

import pyarrow.compute as pc

from crm_pipeline.settings import LakeLayout

log = logging.getLogger(__name__)


def _run_rows(path: str, run_id: str, columns: list[str]) -> list[dict]:
    from crm_pipeline.io import delta_rs

    data = delta_rs.read(path, columns, pc.field("run_id") == run_id)
    return [] if data is None else data.to_pylist()


def data_quality_summary(lake: LakeLayout, run_id: str) -> list[str]:
    """Lines of the summary for `run_id`."""
    checks = _run_rows(lake.ops("data_quality"), run_id,
                       ["table_name", "check_name", "success", "unexpected_count", "severity"])
    suites: dict[str, list[dict]] = defaultdict(list)
    deliveries, suspect = [], []  # landing checks: failed deliveries; loaded but warned (volume)
    for c in checks:
        if not c["table_name"].startswith("landing_"):
            suites[c["table_name"]].append(c)
        elif not c["success"]:
            (deliveries if c["severity"] == "blocking" else suspect).append(c)
    failed = sorted(t for t, cs in suites.items() if any(not c["success"] and c["severity"] == "blocking" for c in cs))
    warned = sorted(t for t, cs in suites.items() if t not in failed and any(not c["success"] for c in cs))
    lines = [f"data quality (run {run_id}): {len(suites)} suites validated, "
             f"{len(suites) - len(failed) - len(warned)} passed, {len(warned)} with warnings, "
             f"{len(failed)} failed; {len(deliveries)} deliveries failed their file checks"
             + (f", {len(suspect)} loaded with a warning" if suspect else "")]
    for c in checks:
        if not c["success"]:
            landing = c["table_name"].startswith("landing_")  # a file check: no row count to show
            kind = "delivery" if landing and c["severity"] == "blocking" else c["severity"]
            lines.append(f"  {kind:<9} {c['table_name']}: {c['check_name']}"
                         + ("" if landing else f" ({c['unexpected_count']:,} unexpected)"))
    rejects = Counter((r["feed"], r["reject_reason"]) for r in
                      _run_rows(lake.quarantine, run_id, ["feed", "reject_reason"]))
    if rejects:
        lines.append(f"  quarantined {sum(rejects.values()):,} records:")
        per_feed: dict[str, list[str]] = defaultdict(list)
        for (feed, reason), n in sorted(rejects.items()):
            per_feed[feed].append(f"{reason} {n:,}")
        lines += [f"    {feed:<11} {', '.join(reasons)}" for feed, reasons in per_feed.items()]
    else:
        lines.append("  quarantined 0 records")
    return lines


def print_data_quality_summary(lake: LakeLayout, run_id: str, progress: Callable[[str], None] = print) -> None:
    """Build the run's Data Docs and print the summary with where they are; never raises (it also
    runs after a failed step)."""
    from crm_pipeline.quality import gx

    try:
        lines = data_quality_summary(lake, run_id)
        docs = gx.build_data_docs(run_id)
    except Exception:  # noqa: BLE001 - a summary must not hide the run's own outcome
        log.exception("could not summarise the data quality of run %s", run_id)
        return
    if docs is not None and docs.is_file():
        lines.append(f"  Data Docs: {docs}")
    for line in lines:
        progress(line)
