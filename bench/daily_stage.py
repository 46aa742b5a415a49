"""The daily stage (landing -> bronze -> silver -> daily rollups) at several volumes, stage by
stage, next to a DuckDB reference doing equal work on the same files in the same invocation.

    .venv/bin/python bench/daily_stage.py [--subscribers 100000,300000,1000000] [--section]

For each volume, one business day is generated (`crm generate --days 1`, kept under
var/bench/day-<n>/ for reruns), then two child processes run one after the other on it, each
sampled for the resident memory of its whole process tree (driver, JVM, Python workers):

  pipeline  one Spark session: `ingest` of every feed, then `build_daily_rollups`; wall time per
            stage from `crm_pipeline.stages` (CRM_STAGE_EVENTS), peak memory per stage
  duckdb    the reference: md5 of every file, gzip decompression, GBK decoding, field-count,
            type, code-list, range, msisdn and window validation, subscriber mapping, dedup by
            key, the per-subscriber daily rollup, and Parquet files of silver, quarantine and
            rollup; as many threads as cores

The reference does no Delta transactions, no data-quality suites, no exact line numbers and no
accounting; the pipeline does all of those. `--section` writes the table into docs/benchmarks.md.
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
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from report import machine, replace_section  # noqa: E402

DAY = "2026-03-02"
SEED = 11
STAGES = ("startup", "read+bronze", "bronze_checks", "silver", "silver_checks", "silver_write", "quarantine",
          "rollups")


# --- the measured children ---------------------------------------------------------------------


def pipeline_child(landing: str, lake: str, day: str | None = None, only: bool = False) -> None:
    """Ingest + rollups of the landing zone (of `day` only, after loading the days before it
    unmeasured, when `day` is given)."""
    from datetime import date, timedelta

    from crm_pipeline import ops
    from crm_pipeline.ingest.load import ingest
    from crm_pipeline.pipeline.rollups import build_daily_rollups
    from crm_pipeline.settings import DEMO_HMAC_KEY, LakeLayout
    from crm_pipeline.spark import build_session
    from crm_pipeline.stages import stage

    with stage("startup"):
        spark = build_session()
        from crm_pipeline.quality import gx

        gx._context()  # GX's own start-up, once per process
    layout = LakeLayout(lake)
    ctx = ops.RunContext(ops.new_run_id("bench"), "bench", "daily")
    first = date.fromisoformat(day) if day else None
    if first and not only:
        events, os.environ["CRM_STAGE_EVENTS"] = os.environ.pop("CRM_STAGE_EVENTS", None), ""
        ingest(spark, landing, layout, ctx, date_to=first - timedelta(days=1), progress=lambda m: None)
        build_daily_rollups(spark, layout, ctx, DEMO_HMAC_KEY, progress=lambda m: None)
        os.environ["CRM_STAGE_EVENTS"] = events
        print(json.dumps({"measured_from": time.time()}), flush=True)
    result = ingest(spark, landing, layout, ctx, date_from=first, date_to=first,
                    progress=lambda m: print(m, flush=True))
    with stage("rollups"):
        build_daily_rollups(spark, layout, ctx, DEMO_HMAC_KEY, progress=lambda m: None)
    print(json.dumps({"rows_read": sum(r["rows_read"] for r in result.rows),
                      "rows_loaded": sum(r["rows_loaded"] for r in result.rows)}))


#: contract time types -> their parsed value in DuckDB SQL (NULL when unparsable)
_PARSED = {
    "timestamp": "try_strptime({c}, '%Y%m%d%H%M%S')",
    "date": "CAST(try_strptime({c}, '%Y%m%d') AS DATE)",
    "month": "CAST(try_strptime({c} || '01', '%Y%m%d') AS DATE)",
}


def _sql_checks(spec) -> tuple[str, str]:
    """(typed select list, reason CASE) of a feed, the pipeline's rules in DuckDB SQL."""
    typed, checks = [], []
    for f in spec.fields:
        c = f'"{f.name}"'
        if not f.nullable:
            checks.append((f"{c} IS NULL", "missing_value"))
        if f.type == "msisdn":
            norm = f"CASE WHEN length({c}) > 11 AND regexp_matches({c}, '^\\+?86\\d{{11}}$') THEN right({c}, 11) ELSE {c} END"
            checks.append((f"{c} IS NOT NULL AND NOT regexp_matches({norm}, '^\\d{{11}}$')", "bad_msisdn"))
            typed.append(f"{norm} AS {c}")
        elif f.type in ("int", "long"):
            checks.append((f"{c} IS NOT NULL AND (NOT regexp_matches({c}, '^-?\\d{{1,18}}$') OR "
                           f"try_cast({c} AS BIGINT) IS NULL)", "bad_number"))
            typed.append(f"try_cast({c} AS BIGINT) AS {c}")
        elif f.type in _PARSED:
            value = _PARSED[f.type].format(c=c)
            checks.append((f"{c} IS NOT NULL AND {value} IS NULL", "bad_timestamp"))
            typed.append(f"{value} AS {c}")
        elif f.type == "flag":
            checks.append((f"{c} IS NOT NULL AND {c} NOT IN ('0', '1')", "bad_code"))
            typed.append(f"{c} = '1' AS {c}")
        else:
            typed.append(c)
        if f.allowed:
            values = ", ".join("'" + v + "'" for v in f.allowed)
            checks.append((f"{c} IS NOT NULL AND {c} NOT IN ({values})", "bad_code"))
        for bound, op in ((f.min, "<"), (f.max, ">")):
            if bound is not None and f.type in ("int", "long"):
                checks.append((f"try_cast({c} AS BIGINT) {op} {bound}", "out_of_range"))
    if spec.kind == "event" and spec.event_time and spec.field(spec.event_time).type == "timestamp":
        t = f"try_strptime(\"{spec.event_time}\", '%Y%m%d%H%M%S')"
        checks.append((f"{t} < business_date - INTERVAL 3 DAY OR {t} >= business_date + INTERVAL 1 DAY",
                       "outside_window"))
    reason = "CASE " + " ".join(f"WHEN {cond} THEN '{r}'" for cond, r in checks) + " END" if checks else "NULL"
    return ", ".join(typed), reason


def _transcode(path: Path, tmp: Path) -> Path:
    """A GBK file as UTF-8 (DuckDB reads UTF-8 only here; undecodable bytes become U+FFFD)."""
    import gzip

    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    out = tmp / (path.name.replace(".gz", "") + ".utf8")
    out.write_bytes(raw.decode("gbk", errors="replace").encode("utf-8"))
    return out


def duckdb_child(landing: str, out: str) -> None:
    import hashlib

    import duckdb

    from crm_pipeline.feeds import load_feeds
    from crm_pipeline.ingest.landing import discover

    out_dir, tmp = Path(out), Path(tempfile.mkdtemp(prefix="duckdb-ref-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    specs = load_feeds()
    deliveries = discover(landing, list(specs))
    totals = defaultdict(int)
    for name, spec in specs.items():  # subscriber before the msisdn-keyed feeds (load_feeds order)
        files = []
        for d in (d for d in deliveries if d.feed == name):
            for e in d.entries:
                p = Path(d.path_of(e))
                digest = hashlib.md5()
                with open(p, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 24), b""):
                        digest.update(block)
                if digest.hexdigest() != e.md5:
                    raise SystemExit(f"{p}: md5 mismatch")
                files.append((str(_transcode(p, tmp) if e.encoding == "GBK" else p), d.business_date))
        if not files:
            continue
        cols = "{" + ", ".join(f"'{f.name}': 'VARCHAR'" for f in spec.fields) + "}"
        paths = [f for f, _ in files]
        con.execute(f"""CREATE OR REPLACE TABLE raw AS
            SELECT *, DATE '{files[0][1]}' AS business_date FROM read_csv({paths!r}, delim='|', header=false,
              quote='', escape='', columns={cols}, auto_detect=false, ignore_errors=true, store_rejects=true,
              filename=true)""")
        typed, reason = _sql_checks(spec)
        con.execute(f"CREATE OR REPLACE TABLE checked AS SELECT filename, business_date, {typed}, {reason} AS reason FROM raw")
        key = ", ".join(f'"{k}"' for k in spec.key)
        if spec.msisdn_field:
            m = f'"{spec.msisdn_field}"'
            con.execute(f"""CREATE OR REPLACE TABLE checked AS
                SELECT c.* REPLACE (CASE WHEN c.reason IS NULL AND h.subscriber_id IS NULL THEN 'unknown_subscriber'
                                    ELSE c.reason END AS reason), h.subscriber_id
                FROM checked c LEFT JOIN holders h
                  ON h.msisdn = c.{m} AND h.snapshot_date = CAST(c."{spec.event_time}" AS DATE)""")
        con.execute(f"""CREATE OR REPLACE TABLE silver AS SELECT * EXCLUDE (reason) FROM checked
            WHERE reason IS NULL QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY filename DESC) = 1""")
        con.execute(f"COPY silver TO '{out_dir / (name + '.parquet')}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT * FROM checked WHERE reason IS NOT NULL) TO '{out_dir / (name + '_rejects.parquet')}' (FORMAT parquet)")
        if name == "subscriber":
            con.execute("""CREATE OR REPLACE TABLE holders AS SELECT business_date AS snapshot_date, msisdn,
                arg_max(subscriber_id, activation_date) AS subscriber_id FROM silver
                WHERE status IN ('ACTIVE', 'SUSPENDED') OR (status = 'TERMINATED' AND status_date = business_date)
                GROUP BY ALL""")
        if name in ("cdr_voice", "cdr_sms", "cdr_data"):
            con.execute(f"CREATE OR REPLACE TABLE s_{name} AS SELECT * FROM silver")
        totals["rows"] += con.execute("SELECT count(*) FROM raw").fetchone()[0]
        totals["rejected_structure"] += con.execute("SELECT count(*) FROM reject_errors").fetchone()[0]
    con.execute(f"""COPY (
        SELECT subscriber_id, usage_date, sum(calls) AS calls, sum(sec) AS voice_sec, sum(sms) AS sms,
               sum(bytes) AS data_bytes, sum(charge) AS charge_fen FROM (
          SELECT subscriber_id, CAST(start_time AS DATE) AS usage_date, 1 AS calls, duration_sec AS sec, 0 AS sms,
                 0 AS bytes, charge_fen AS charge FROM s_cdr_voice
          UNION ALL SELECT subscriber_id, CAST(event_time AS DATE), 0, 0, 1, 0, charge_fen FROM s_cdr_sms
          UNION ALL SELECT subscriber_id, CAST(start_time AS DATE), 0, 0, 0, uplink_bytes + downlink_bytes, charge_fen
                 FROM s_cdr_data) GROUP BY ALL) TO '{out_dir / 'daily_usage.parquet'}' (FORMAT parquet)""")
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(dict(totals)))


# --- the harness -------------------------------------------------------------------------------


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        p = psutil.Process(proc.pid)
        for q in [p, *p.children(recursive=True)]:
            try:
                total += q.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run_child(args: list[str], env: dict, script: str = __file__) -> tuple[float, list[tuple[float, int]], str]:
    """Run `script` with `args` in a child process; return its wall time, (time, tree RSS) samples
    and stdout."""
    samples: list[tuple[float, int]] = []
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, script, *args], env=env, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), _tree_rss(proc)))
            done.wait(0.2)

    threading.Thread(target=sample, daemon=True).start()
    out, _ = proc.communicate()
    done.set()
    if proc.returncode:
        raise SystemExit(f"child {args[0]} failed with exit code {proc.returncode}")
    return time.time() - t0, samples, out


def stage_totals(events: Path, samples: list[tuple[float, int]]) -> dict[str, dict]:
    """Per stage name: seconds summed over its events (feeds, tables) and the peak tree RSS sampled
    while any of them ran."""
    stages: dict[str, dict] = defaultdict(lambda: dict(seconds=0.0, peak=0))
    for line in events.read_text().splitlines():
        e = json.loads(line)
        s = stages[e["stage"]]
        s["seconds"] += e["end"] - e["start"]
        s["peak"] = max([s["peak"], *[rss for t, rss in samples if e["start"] <= t <= e["end"]]])
    return dict(stages)


def generate_day(n: int) -> Path:
    landing = ROOT / "var" / "bench" / f"day-{n}" / "landing"
    if not (landing / "_generator" / "truth.json").is_file():
        shutil.rmtree(landing, ignore_errors=True)
        subprocess.run([str(ROOT / ".venv" / "bin" / "crm"), "generate", "--landing", str(landing),
                        "--subscribers", str(n), "--start", DAY, "--days", "1", "--seed", str(SEED),
                        "--progress", "none"], check=True)
    return landing


def measure(n: int) -> dict:
    landing = generate_day(n)
    data_bytes = sum(p.stat().st_size for p in landing.glob("*/*/*.dat*"))
    work = Path(tempfile.mkdtemp(prefix=f"crm-daily-{n}-", dir=ROOT / "var" / "bench"))
    events = work / "stages.jsonl"
    env = dict(os.environ, CRM_STAGE_EVENTS=str(events), PYTHONPATH=str(ROOT / "jobs"))
    print(f"[bench] {n:,} subscribers: pipeline ...", flush=True)
    p_wall, p_samples, p_out = run_child(["--pipeline-child", str(landing), str(work / "lake")], env)
    counts = json.loads(p_out.strip().splitlines()[-1])
    print(f"[bench] {n:,} subscribers: duckdb reference ...", flush=True)
    d_wall, d_samples, d_out = run_child(["--duckdb-child", str(landing), str(work / "duckdb")], env)
    stages = stage_totals(events, p_samples)
    shutil.rmtree(work, ignore_errors=True)
    return dict(subscribers=n, rows=counts["rows_read"], loaded=counts["rows_loaded"], mib=data_bytes / 2**20,
                pipeline=p_wall, pipeline_peak=max(r for _, r in p_samples), duckdb=d_wall,
                duckdb_peak=max(r for _, r in d_samples), stages=stages)


def steady(n: int, days: int = 11) -> dict:
    """Day D loaded into a lake holding D-10 .. D-1 (steady state) against a first load of D alone."""
    landing = ROOT / "var" / "bench" / f"steady-{n}" / "landing"
    if not (landing / "_generator" / "truth.json").is_file():
        shutil.rmtree(landing, ignore_errors=True)
        subprocess.run([str(ROOT / ".venv" / "bin" / "crm"), "generate", "--landing", str(landing),
                        "--subscribers", str(n), "--start", DAY, "--days", str(days), "--seed", str(SEED),
                        "--progress", "none"], check=True)
    from datetime import date, timedelta

    last = (date.fromisoformat(DAY) + timedelta(days=days - 1)).isoformat()
    out = {}
    for label, preload in (("first load", False), ("steady state", True)):
        work = Path(tempfile.mkdtemp(prefix=f"crm-steady-{n}-", dir=ROOT / "var" / "bench"))
        events = work / "stages.jsonl"
        env = dict(os.environ, CRM_STAGE_EVENTS=str(events), PYTHONPATH=str(ROOT / "jobs"))
        print(f"[bench] steady state, {n:,} subscribers: {label} of {last} ...", flush=True)
        args = ["--pipeline-child", str(landing), str(work / "lake")]
        if preload:
            args += ["--day", last]
        else:
            args += ["--day", last, "--only"]
        _, _, stdout = run_child(args, env)
        seconds = defaultdict(float)
        for line in events.read_text().splitlines():
            e = json.loads(line)
            if e["stage"] in STAGES and e["stage"] != "startup":  # a stage nested in rollups is in its time
                seconds[e["stage"]] += e["end"] - e["start"]
        rows = json.loads(stdout.strip().splitlines()[-1])["rows_read"]
        out[label] = dict(seconds=dict(seconds), total=sum(seconds.values()), rows=rows)
        shutil.rmtree(work, ignore_errors=True)
    return out


def table(results: list[dict]) -> str:
    head = "| stage | " + " | ".join(f"{r['subscribers']:,} subs: s | rows/s | peak MiB" for r in results) + " |"
    sep = "|---|" + "---:|---:|---:|" * len(results)
    lines = [head, sep]
    for name in STAGES:
        cells = []
        for r in results:
            s = r["stages"].get(name)
            if s is None:
                cells.append("– | – | –")
                continue
            rate = f"{r['rows'] / s['seconds']:,.0f}" if name not in ("startup",) and s["seconds"] else "–"
            cells.append(f"{s['seconds']:.1f} | {rate} | {s['peak'] / 2**20:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **pipeline, whole process** | " + " | ".join(
        f"**{r['pipeline']:.1f}** | **{r['rows'] / r['pipeline']:,.0f}** | {r['pipeline_peak'] / 2**20:,.0f}"
        for r in results) + " |")
    lines.append("| DuckDB reference, whole process | " + " | ".join(
        f"{r['duckdb']:.1f} | {r['rows'] / r['duckdb']:,.0f} | {r['duckdb_peak'] / 2**20:,.0f}" for r in results) + " |")
    lines.append("| **pipeline / DuckDB time** | " + " | ".join(
        f"**{r['pipeline'] / r['duckdb']:.1f}x** | |" for r in results) + " |")
    return "\n".join(lines)


def _steady_lines(state: dict, n: int) -> list[str]:
    first, steady_ = state["first load"], state["steady state"]
    names = sorted(set(first["seconds"]) | set(steady_["seconds"]), key=lambda k: STAGES.index(k) if k in STAGES else 99)
    lines = [f"Steady state, {n:,} subscribers ({first['rows']:,} lines on the measured day): the last of 11 "
             "generated days loaded into an empty lake (first load) and into a lake already holding the 10 "
             "days before it, with their late and out-of-window records (steady state); Spark start-up excluded.",
             "", "| stage | first load s | steady state s |", "|---|---:|---:|"]
    for k in names:
        lines.append(f"| {k} | {first['seconds'].get(k, 0):.1f} | {steady_['seconds'].get(k, 0):.1f} |")
    lines += [f"| **total** | **{first['total']:.1f}** | **{steady_['total']:.1f}** "
              f"({steady_['total'] / first['total']:.2f}x) |", ""]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="100000,300000,1000000",
                    help="comma-separated volumes (default %(default)s)")
    ap.add_argument("--section", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--steady", type=int, metavar="SUBSCRIBERS",
                    help="also measure a steady-state day (lake holding the 10 days before) at this volume")
    ap.add_argument("--pipeline-child", nargs=2, metavar=("LANDING", "LAKE"), help=argparse.SUPPRESS)
    ap.add_argument("--day", help=argparse.SUPPRESS)
    ap.add_argument("--only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--duckdb-child", nargs=2, metavar=("LANDING", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pipeline_child:
        pipeline_child(*args.pipeline_child, day=args.day, only=args.only)
        return 0
    if args.duckdb_child:
        duckdb_child(*args.duckdb_child)
        return 0
    results = [measure(int(n)) for n in args.subscribers.split(",")] if args.subscribers else []
    state = steady(args.steady) if args.steady else None
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    body = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} on {machine()}, Python {platform.python_version()}, "
        "Spark local mode.",
        "Data: one generated business day per volume (`crm generate --days 1 --seed 11`): " + "; ".join(
            f"{r['subscribers']:,} subscribers = {r['rows']:,} lines in {r['mib']:.0f} MiB" for r in results) + ".",
        "Rows/s = delivered lines of the day / stage seconds; peak = resident memory of the whole process tree "
        "(driver, JVM, Python workers) while the stage ran.",
        "",
        table(results),
        "",
        *(_steady_lines(state, args.steady) if state else []),
        "Command: `.venv/bin/python bench/daily_stage.py --subscribers "
        f"{args.subscribers}{f' --steady {args.steady}' if args.steady else ''} --section`.",
    ])
    print(body)
    if args.section:
        replace_section(ROOT / "docs" / "benchmarks.md", "Daily stage", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
