"""The monthly stage (gold subscriber_month with value indices and segments, CLV, churn features
and scores, every other mart, validation, gold writes, publish) at 100 k and 1 M subscribers,
stage by stage, from daily rollups: raw CDRs are never read.

    .venv/bin/python bench/monthly_stage.py [--subscribers 100000,1000000] [--section]

A month of raw CDRs for 1 M subscribers does not fit a laptop's disk, so the lake is scaled up
from a real one:

1. base: `crm generate` (1,000 subscribers x 246 days, seed 7: January-August complete) and
   `crm run` on it, kept under var/bench/monthly-base/. Its lake has everything the monthly stage
   reads, churn models in the registry included;
2. scaled: for each volume, every row the monthly stage of August reads (silver snapshots, bills,
   recharges, tickets, surveys; gold daily usage and daily contacts; the gold subscriber_month
   and churn_features history before August) is copied k times, k = volume / base subscribers.
   Copy c > 0 gets its own identities: ids get a `-c` suffix, subscription numbers a new 11-digit
   number, and the keyed hashes (msisdn_key, other_party_key) the hash of that number, so calling
   circles stay inside each copy and joins see as many distinct keys as real data would. Plans,
   the model registry and the ops tables are copied once. The monthly summaries the analyses of
   earlier months would have left are then built from the copied daily rollups: the contact pairs
   of June and July (gold contact_months) and the activity of May to July (gold activity_months).
   Kept under var/bench/monthly-<n>/;
3. measured: one child process runs `crm analyse --month 2026-08` and `crm publish --month 2026-08`
   on the scaled lake (DuckDB warehouse), with wall time per stage from `crm_pipeline.stages`
   and the resident memory of its whole process tree sampled 5 times a second.

`--section` writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "jobs"))  # the parent reads Delta logs (delta_rs); children get PYTHONPATH
from daily_stage import run_child, stage_totals  # noqa: E402
from report import machine, replace_section  # noqa: E402

BASE = dict(subscribers=1000, start="2026-01-01", days=246, seed=7)
MONTH = "2026-08-01"
#: stages in the order they run; `marts` and `validate` are summed over the tables
STAGES = ("startup", "month_summaries", "subscriber_month", "clv", "churn_features", "churn_scoring", "migration",
          "marts", "validate", "gold_write", "publish")


# --- scaling the base lake ---------------------------------------------------------------------


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def scale_child(base: str, out: str, volume: int, month: str) -> None:
    """Write the scaled lake `out` from the base lake (see the module docstring)."""
    from pyspark.sql import functions as F

    from crm_pipeline.columns import hmac_sha256, hmac_sha256_hex
    from crm_pipeline.feeds import feed_spec
    from crm_pipeline.io import delta
    from crm_pipeline.pipeline.rollups import CONTACT_TABLES, contact_keys_as_bytes
    from crm_pipeline.settings import DEMO_HMAC_KEY, LakeLayout
    from crm_pipeline.spark import build_session
    from crm_pipeline.transforms.staging.silver import partition_date

    spark = build_session()
    src, dst = LakeLayout(base), LakeLayout(out)
    for table in CONTACT_TABLES:  # a base an earlier version built
        contact_keys_as_bytes(spark, src, table)
    m = date.fromisoformat(month)
    hi = _add_months(m, 1) - timedelta(days=1)
    snaps = delta.read(spark, src.silver("subscriber"))
    active = snaps.where((F.col("snapshot_date") == hi) & (F.col("status") != "TERMINATED")).count()
    k = max(1, round(volume / active))
    print(f"[scale] {active:,} active subscriptions at {hi} in the base x {k} copies", flush=True)

    numbers = [r[0] for r in snaps.select("msisdn").distinct().orderBy("msisdn").collect()]
    if len(numbers) >= 10**5 or k > 10**4:
        raise SystemExit("the base has too many numbers, or the volume needs too many copies, for 11-digit clones")
    index = spark.createDataFrame([(n, i) for i, n in enumerate(numbers)], "_n string, _i int")
    index = index.withColumn("_key", hmac_sha256_hex(F.col("_n"), DEMO_HMAC_KEY)).cache()
    copies = spark.range(k).select(F.col("id").cast("int").alias("_c"))

    def clone_number(i):
        return F.concat(F.lit("19"), F.lpad(F.col("_c").cast("string"), 4, "0"), F.lpad(i.cast("string"), 5, "0"))

    def clone(df, ids=(), numbers=(), keys=()):
        cols = df.columns
        out = df.crossJoin(F.broadcast(copies))
        first = F.col("_c") == 0
        for c in ids:
            out = out.withColumn(c, F.when(first | F.col(c).isNull(), F.col(c))
                                 .otherwise(F.concat(F.col(c), F.lit("-"), F.col("_c").cast("string"))))
        for c in numbers:
            out = (out.join(F.broadcast(index.select(F.col("_n").alias(c), F.col("_i").alias(f"_i_{c}"))), c, "left")
                   .withColumn(c, F.when(first | F.col(f"_i_{c}").isNull(), F.col(c))
                               .otherwise(clone_number(F.col(f"_i_{c}")))))
        for c in keys:  # hex text (msisdn_key) or its bytes (other_party_key)
            as_bytes = dict(df.dtypes)[c] == "binary"
            key, keyed = (F.unhex("_key"), hmac_sha256) if as_bytes else (F.col("_key"), hmac_sha256_hex)
            out = (out.join(F.broadcast(index.select(key.alias(c), F.col("_i").alias(f"_i_{c}"))), c, "left")
                   .withColumn(c, F.when(first | F.col(f"_i_{c}").isNull(), F.col(c))
                               .otherwise(keyed(clone_number(F.col(f"_i_{c}")), DEMO_HMAC_KEY))))
        return out.select(*cols)

    def write(df, path, partition):
        t0 = time.monotonic()
        df.write.format("delta").mode("overwrite").option("optimizeWrite", "true").partitionBy(partition).save(path)
        print(f"[scale] {'/'.join(path.split('/')[-2:])}: {spark.read.format('delta').load(path).count():,} rows "
              f"({time.monotonic() - t0:.0f} s)", flush=True)

    lo6, lo3, lo2 = _add_months(m, -6), _add_months(m, -3), _add_months(m, -2)
    # each feed partitioned as the silver build partitions it (bill: by bill_month_date)
    silver = [
        ("subscriber", F.col("snapshot_date").between(m - timedelta(days=1), hi),
         ("subscriber_id", "customer_id", "account_id", "group_id"), ("msisdn",)),
        ("bill", F.col("bill_month").between(lo6, m), ("bill_line_id", "account_id", "subscriber_id"), ()),
        ("recharge", F.col("event_date").between(lo6, hi), ("txn_id", "account_id", "subscriber_id"), ("msisdn",)),
        ("ticket", F.col("event_date").between(lo2, hi), ("ticket_id", "subscriber_id"), ("msisdn",)),
        ("survey", None, ("response_id", "subscriber_id"), ("msisdn",)),
    ]
    for feed, where, ids, nums in silver:
        df = delta.read(spark, src.silver(feed))
        write(clone(df.where(where) if where is not None else df, ids, nums), dst.silver(feed),
              partition_date(feed_spec(feed))[0])
    write(delta.read(spark, src.silver("plan")), dst.silver("plan"), "snapshot_date")
    gold = [
        ("daily_usage_by_subscriber", "usage_date", F.col("usage_date").between(lo3, hi), ("subscriber_id",), ()),
        ("daily_contacts", "usage_date", F.col("usage_date").between(lo2, hi), ("subscriber_id",),
         ("other_party_key",)),
        ("subscriber_month", "month", F.col("month") < m, ("subscriber_id", "customer_id", "account_id", "group_id"),
         ("msisdn_key",)),
        ("churn_features", "month", F.col("month") < m, ("subscriber_id",), ()),
    ]
    for name, part, where, ids, keys in gold:
        write(clone(delta.read(spark, src.gold(name)).where(where), ids, keys=keys), dst.gold(name), part)
    # the monthly summaries of M-3..M-1 (activity) and M-2..M-1 (contact pairs), as the analyses of
    # those months left them
    from crm_pipeline.pipeline.rollups import month_summaries

    earlier = [lo3, lo2, _add_months(m, -1)]
    for name, months in (("contact_months", earlier[1:]), ("activity_months", earlier)):
        t0 = time.monotonic()
        n = month_summaries(spark, dst, name, months).count()
        print(f"[scale] gold/{name}: {n:,} rows ({time.monotonic() - t0:.0f} s)", flush=True)
    for layer in ("ops", "models"):
        shutil.copytree(Path(base) / layer, Path(out) / layer, dirs_exist_ok=True)
    (Path(out) / "_SCALED").write_text(json.dumps(dict(active=active, copies=k, volume=volume)))


def build_base() -> Path:
    """The generated base lake (reused when present)."""
    base = ROOT / "var" / "bench" / "monthly-base"
    lake = base / "lake"
    if (base / "_BUILT").is_file():
        return lake
    shutil.rmtree(base, ignore_errors=True)
    crm = str(ROOT / ".venv" / "bin" / "crm")
    print(f"[bench] base lake: {BASE['subscribers']:,} subscribers x {BASE['days']} days (once, ~10 min) ...",
          flush=True)
    subprocess.run([crm, "generate", "--landing", str(base / "landing"), "--subscribers", str(BASE["subscribers"]),
                    "--start", BASE["start"], "--days", str(BASE["days"]), "--seed", str(BASE["seed"]),
                    "--progress", "none"], check=True)
    subprocess.run([crm, "run", "--landing", str(base / "landing"), "--lake", str(lake), "--demo-key",
                    "--warehouse", f"duckdb:///{base / 'warehouse.duckdb'}"], check=True, stdout=subprocess.DEVNULL)
    (base / "_BUILT").write_text("ok\n")
    return lake


def scaled_lake(base: Path, volume: int) -> tuple[Path, dict]:
    from crm_pipeline.io import delta_rs

    lake = ROOT / "var" / "bench" / f"monthly-{volume}" / "lake"
    # a lake scaled by an earlier version holds the contact keys as hex text: the measured month
    # would rewrite its monthly pairs first (crm_pipeline.pipeline.rollups.contact_keys_as_bytes)
    # and read the daily ones as hex, so scale anew
    if delta_rs.column_type(str(lake / "gold" / "daily_contacts"), "other_party_key") == "string":
        (lake / "_SCALED").unlink(missing_ok=True)
    if not (lake / "_SCALED").is_file():
        shutil.rmtree(lake, ignore_errors=True)
        print(f"[bench] scaling the base lake to {volume:,} subscribers (once) ...", flush=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "jobs"))
        subprocess.run([sys.executable, __file__, "--scale-child", str(base), str(lake), str(volume), MONTH],
                       check=True, env=env)
    return lake, json.loads((lake / "_SCALED").read_text())


# --- the measured child ------------------------------------------------------------------------


def monthly_child(lake: str, warehouse: str, month: str) -> None:
    """`crm analyse --month M` then `crm publish --month M`, in one process."""
    from crm_pipeline import ops
    from crm_pipeline.pipeline.monthly import analyse, analytics_settings
    from crm_pipeline.publish.publish import publish
    from crm_pipeline.settings import DEMO_HMAC_KEY, LakeLayout, SparkSettings
    from crm_pipeline.spark import build_session
    from crm_pipeline.stages import stage

    with stage("startup"):
        spark = build_session(SparkSettings.from_env())
        from crm_pipeline.quality import gx

        gx._context()
    layout, m = LakeLayout(lake), date.fromisoformat(month)
    ctx = ops.RunContext(ops.new_run_id("bench"), "bench", "monthly")
    built = analyse(spark, layout, ctx, analytics_settings(), DEMO_HMAC_KEY, months=[m],
                    progress=lambda msg: print(msg, flush=True))
    if built != [m]:
        raise SystemExit(f"analyse built {built}, expected {m}")
    spark.stop()
    publish(layout, f"duckdb:///{warehouse}", [m], progress=lambda msg: print(msg, flush=True))
    import duckdb

    con = duckdb.connect(warehouse, read_only=True)
    rows = con.execute("SELECT count(*) FROM crm.subscriber_month").fetchone()[0]
    print(json.dumps({"subscriber_months": rows}))


def _link_or_copy(src: str, dst: str) -> None:
    if src.endswith(".parquet"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def measure(volume: int, base: Path) -> dict:
    lake, info = scaled_lake(base, volume)
    work = Path(tempfile.mkdtemp(prefix=f"crm-monthly-{volume}-", dir=ROOT / "var" / "bench"))
    # the measured run writes gold for the month: work on a copy, so reruns start from the same lake.
    # Parquet files are written once and never changed in place, so the copy links them (no space,
    # no time: the 1 M lake is 24 GiB); logs, registry and ops files are copied.
    shutil.copytree(lake, work / "lake", copy_function=_link_or_copy)
    events = work / "stages.jsonl"
    env = dict(os.environ, CRM_STAGE_EVENTS=str(events), PYTHONPATH=str(ROOT / "jobs"))
    print(f"[bench] {volume:,} subscribers: analyse + publish ...", flush=True)
    wall, samples, out = run_child(["--monthly-child", str(work / "lake"), str(work / "wh.duckdb"), MONTH], env,
                                   script=__file__)
    rows = json.loads(out.strip().splitlines()[-1])["subscriber_months"]
    stages = stage_totals(events, samples)
    # what the stage reads: daily usage and daily contacts of M, the stored summaries of earlier months
    month = date.fromisoformat(MONTH)
    usage_rows = (_rows(lake, "gold/daily_usage_by_subscriber", month) + _rows(lake, "gold/daily_contacts", month)
                  + _rows(lake, "gold/contact_months") + _rows(lake, "gold/activity_months"))
    shutil.rmtree(work, ignore_errors=True)
    return dict(subscribers=volume, rows=rows, copies=info["copies"], rollup_rows=usage_rows, wall=wall,
                peak=max(r for _, r in samples), stages=stages)


def _rows(lake: Path, table: str, since: date | None = None) -> int:
    """Rows of the current version of a Delta table from its log (no data read): of the files whose
    `usage_date` is `since` or later, when given. (A lake converted to byte contact keys has
    rewritten its contact tables: their logs hold removed files too.)"""
    from crm_pipeline.io import delta_rs

    actions = delta_rs.add_actions(str(lake / table))
    rows = actions.column("num_records").to_pylist()
    if since is None:
        return sum(rows)
    return sum(n for n, day in zip(rows, actions.column("partition.usage_date").to_pylist()) if day >= since)


def table(results: list[dict]) -> str:
    head = "| stage | " + " | ".join(f"{r['subscribers']:,} subs: s | rows/s | peak MiB" for r in results) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(results)]
    for name in STAGES:
        cells = []
        for r in results:
            s = r["stages"].get(name)
            if s is None:
                cells.append("– | – | –")
                continue
            rate = f"{r['rows'] / s['seconds']:,.0f}" if name != "startup" and s["seconds"] else "–"
            cells.append(f"{s['seconds']:.1f} | {rate} | {s['peak'] / 2**20:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **whole process** | " + " | ".join(
        f"**{r['wall']:.1f}** | **{r['rows'] / r['wall']:,.0f}** | {r['peak'] / 2**20:,.0f}" for r in results) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="100000,1000000", help="comma-separated volumes (default %(default)s)")
    ap.add_argument("--section", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--scale-child", nargs=4, metavar=("BASE", "OUT", "VOLUME", "MONTH"), help=argparse.SUPPRESS)
    ap.add_argument("--monthly-child", nargs=3, metavar=("LAKE", "WAREHOUSE", "MONTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        base, out, volume, month = args.scale_child
        scale_child(base, out, int(volume), month)
        return 0
    if args.monthly_child:
        monthly_child(*args.monthly_child)
        return 0
    base = build_base()
    results = [measure(int(n), base) for n in args.subscribers.split(",")]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    body = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} on {machine()}, Python {platform.python_version()}, "
        "Spark local mode.",
        f"Data: the lake of {BASE['subscribers']:,} generated subscribers x {BASE['days']} days (seed {BASE['seed']}) "
        "scaled up by copies with their own identities (see the harness docstring); the month built is "
        f"{MONTH[:7]}, with its gold history, daily rollups and churn models. " + "; ".join(
            f"{r['subscribers']:,} subscribers = {r['copies']:,} copies, {r['rows']:,} subscriber-months, "
            f"{r['rollup_rows']:,} rollup rows read (daily usage and contacts of M, monthly contact pairs of M-2 "
            "and M-1, monthly activity of M-3..M-1)" for r in results) + ".",
        "Rows/s = subscriber-months of the month / stage seconds; peak = resident memory of the whole process "
        "tree (driver, JVM, Python workers) while the stage ran. Stages: `month_summaries` the month's calling-circle "
        "pairs and activity (gold contact_months, activity_months) from its daily rollups, built once per month; `subscriber_month` the month's "
        "subscriber rows with value components, indices and segments (from snapshots, rollups, bills, payments "
        "and the gold history); `clv` the sBG fits and lifetime values; `churn_features` and `churn_scoring` "
        "(scikit-learn models applied in Spark); `migration` the 5G upgrade models; `marts` materialises every "
        "gold table (watch list, lost customers, KPIs, segments, concentration, key accounts, ...); `validate` "
        "the GX suites; `gold_write` fingerprints and Delta writes; `publish` the DuckDB warehouse.",
        "",
        table(results),
        "",
        f"Command: `.venv/bin/python bench/monthly_stage.py --subscribers {args.subscribers} --section`.",
    ])
    print(body)
    if args.section:
        replace_section(ROOT / "docs" / "benchmarks.md", "Monthly stage", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
