"""Lake upkeep (`crm maintain`, the maintenance DAG): compact small files (Delta OPTIMIZE), remove
files no table version within the retention needs (VACUUM), and prune the Data Docs and validation
results of old runs, rebuilding the index of the runs kept.

The retention bounds time travel: a Delta version older than it may no longer be readable. The
pipeline itself never reads old versions (restatements compare a new build with the current
gold; crm_ops.publications records the version published for lineage, and the rows themselves
stay in the warehouse), so the retention is the operators' window for looking back at or
restoring a table (docs/runbook.md). Delta refuses less than 7 days (a concurrent reader or
writer may still need the files); so does this module.

Tables are grouped by their writer, so each group is maintained under the pool of the tasks that
write it (crm_pipeline.dag_support): `silver` (bronze, silver, the quarantine and the daily
rollups, written by the daily ingest) and `gold` (the gold marts, the ops tables).
"""

from __future__ import annotations

import html
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from crm_pipeline.errors import UsageError
from crm_pipeline.settings import LakeLayout

MIN_RETAIN_DAYS = 7
#: gold tables written by the daily rollup (crm_pipeline.pipeline.rollups), in the silver group
ROLLUP_TABLES = ("daily_usage_by_subscriber", "daily_contacts")
GROUPS = ("silver", "gold")


def tables(lake: LakeLayout, group: str) -> list[str]:
    """The Delta tables of `group` present in the lake, as `<layer>/<name>`."""
    from pyarrow import fs as pafs

    from crm_pipeline.ingest.reader import resolve

    if group not in GROUPS:
        raise UsageError(f"no such table group {group!r} (groups: {', '.join(GROUPS)})")
    filesystem, root = resolve(lake.root)
    found = []
    for layer in ("bronze", "silver", "restricted", "gold", "ops"):
        try:
            entries = filesystem.get_file_info(pafs.FileSelector(f"{root}/{layer}", allow_not_found=True))
        except FileNotFoundError:
            continue
        for entry in sorted(entries, key=lambda e: e.base_name):
            if entry.type != pafs.FileType.Directory:
                continue
            if filesystem.get_file_info(f"{entry.path}/_delta_log").type != pafs.FileType.Directory:
                continue
            writer = "gold" if layer == "ops" or (layer == "gold" and entry.base_name not in ROLLUP_TABLES) \
                else "silver"
            if writer == group:
                found.append(f"{layer}/{entry.base_name}")
    return found


def check_retention(retain_days: int) -> None:
    """A usage error for a retention below Delta's floor, before any work starts."""
    if retain_days < MIN_RETAIN_DAYS:
        raise UsageError(f"--retain-days {retain_days}: Delta keeps at least {MIN_RETAIN_DAYS} days of history "
                         "(readers and writers in flight may need the files)")


def optimize_and_vacuum(spark, lake: LakeLayout, group: str, retain_days: int,
                        progress: Callable[[str], None] = print) -> list[dict]:
    """OPTIMIZE then VACUUM every table of `group`; one row per table: files compacted and added,
    files removed by the vacuum."""
    from delta.tables import DeltaTable

    check_retention(retain_days)
    # VACUUM lists a table's folders in a Spark job of spark.sql.sources.parallelPartitionDiscovery
    # .parallelism tasks (10,000 by default, thousands of empty tasks per table): a few per core do
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism",
                   str(4 * spark.sparkContext.defaultParallelism))
    out = []
    names = tables(lake, group)
    progress(f"maintain: {len(names)} {group} tables, retaining {retain_days} days of history")
    for name in names:
        clock = time.monotonic()
        path = f"{lake.root.rstrip('/')}/{name}"
        table = DeltaTable.forPath(spark, path)
        metrics = table.optimize().executeCompaction().select("metrics.numFilesAdded",
                                                               "metrics.numFilesRemoved").first()
        before = _file_count(spark, path)
        table.vacuum(retain_days * 24.0)
        row = dict(table=name, compacted=int(metrics[1] or 0), written=int(metrics[0] or 0),
                   vacuumed=max(0, before - _file_count(spark, path)))
        out.append(row)
        progress(f"  {name}: {row['compacted']} files compacted into {row['written']}, {row['vacuumed']} old files "
                 f"removed ({time.monotonic() - clock:.1f} s)")
    return out


def _file_count(spark, path: str) -> int:
    """Data files under a table's folder (current and old versions)."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    filesystem = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    files = filesystem.listFiles(hadoop_path, True)
    count = 0
    while files.hasNext():
        status = files.next()
        count += "_delta_log" not in status.getPath().toString() and status.getPath().getName().endswith(".parquet")
    return count


def prune_data_docs(folder: str | None, keep_days: int, now: datetime | None = None,
                    progress: Callable[[str], None] = print) -> list[str]:
    """Remove the Data Docs sites (`runs/<run>`) and validation results of runs older than
    `keep_days`, and write `index.html` listing the runs kept, newest first. Returns the runs removed."""
    if folder is None:
        progress("maintain: no local Data Docs folder (CRM_DATA_DOCS_DIR) to prune")
        return []
    base = Path(folder)
    cutoff = (now or datetime.now()).timestamp() - keep_days * 86400
    removed = []
    for site in sorted((base / "runs").glob("*")) if (base / "runs").is_dir() else []:
        if site.is_dir() and site.stat().st_mtime < cutoff:
            shutil.rmtree(site)
            removed.append(site.name)
    results = base / "results"
    for path in sorted(results.rglob("*.json")) if results.is_dir() else []:
        if path.stat().st_mtime < cutoff:
            path.unlink()
    for directory in sorted((p for p in results.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) \
            if results.is_dir() else []:
        if not any(directory.iterdir()):
            directory.rmdir()
    kept = sorted(((s.stat().st_mtime, s.name) for s in (base / "runs").glob("*") if (s / "index.html").is_file()),
                  reverse=True) if (base / "runs").is_dir() else []
    rows = "\n".join(f'<li><a href="runs/{html.escape(name)}/index.html">{html.escape(name)}</a> '
                     f"({datetime.fromtimestamp(mtime):%Y-%m-%d %H:%M})</li>" for mtime, name in kept)
    base.mkdir(parents=True, exist_ok=True)
    (base / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>CRM pipeline: data quality by run</title>"
        f"<h1>Data quality by run</h1><p>{len(kept)} runs kept ({keep_days} days).</p><ul>\n{rows}\n</ul>\n",
        encoding="utf-8")
    progress(f"maintain: Data Docs of {len(removed)} runs older than {keep_days} days removed, "
             f"{len(kept)} kept: {base / 'index.html'}")
    return removed

