"""Build what local-mode Spark drivers start from (`make setup`): a class-data archive, or on a JDK 25
or later an ahead-of-time cache, in the jar folder, and the record of the Java home it was built with.

A driver JVM loads, parses and verifies some thousands of classes of Spark, Delta and their
libraries before its first job, in every `crm` step, and then compiles the methods it runs hot,
a third of a demo's CPU on 2 cores (docs/benchmarks.md).

- On a JDK before 25, an application class-data sharing archive (`spark-classes.jsa`; the JDK's
  CDS: `-XX:ArchiveClassesAtExit` writes it, `-XX:SharedArchiveFile` maps it read-only) holds the
  classes ready: a session plus its first Delta read took 18.5 s without and 12 s with it on 2 cores.
- On a JDK 25 or later, the ahead-of-time cache (`spark-classes.aot`; JEPs 483, 514 and 515:
  `-XX:AOTCacheOutput` writes it, `-XX:AOTCache` maps it) holds the classes loaded and linked, and
  the profiles of the methods the training run made hot, which the JIT compilers of a later run
  start from. Demos took 157 s with it against 169 s on JDK 17 with the archive, on average over
  runs in turn (docs/benchmarks.md); a cache trained by a whole small pipeline run did no better.

Either is written as the JVM exits after a small workload that touches what the steps use (a
Delta write, replaceWhere, merge and read, joins, aggregations, windows, Arrow to Python).

`crm_pipeline.spark.build_session` starts a local-mode driver from the recorded Java home (unless
`JAVA_HOME` names another) with the cache or the archive; a JVM whose JDK or class path differs
from theirs ignores them, silently, and starts as usual.

    python infra/spark/archive_classes.py infra/jars/lib [JAVA_HOME]

JAVA_HOME: the JDK to build for and record (default: `JAVA_HOME`, else the `java` on the path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def workload() -> None:
    """Spark and Delta doing a little of everything, in a session of the pipeline's settings."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from crm_pipeline.spark import build_session

    spark = build_session()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/t"
        df = spark.range(2000).select(F.col("id"), (F.col("id") % 7).alias("k"),
                                      F.date_add(F.lit("2026-01-01").cast("date"), (F.col("id") % 3).cast("int"))
                                      .alias("day"), F.sha2(F.col("id").cast("string"), 256).alias("h"))
        df.write.format("delta").partitionBy("day").save(path)
        df.where("day = DATE'2026-01-01'").write.format("delta").mode("overwrite") \
            .option("replaceWhere", "day = DATE'2026-01-01'").option("optimizeWrite", "true").save(path)
        DeltaTable.forPath(spark, path).alias("t").merge(df.limit(10).alias("s"), "t.id = s.id") \
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        stored = spark.read.format("delta").load(path)
        w = Window.partitionBy("k").orderBy("id")
        out = (stored.join(df.groupBy("k").agg(F.count("*").alias("n"), F.max("h").alias("m")), "k")
               .withColumn("r", F.row_number().over(w)).persist())
        out.count()
        out.where("r < 3").toPandas()
        out.groupBy("day").agg(F.countDistinct("k")).collect()
        out.unpersist()
    spark.stop()


def _exit_jvm() -> None:
    """End the JVM pyspark started and wait while it writes the archive or cache as it exits."""
    from pyspark import SparkContext

    jvm = SparkContext._gateway.proc
    jvm.stdin.close()  # the gateway server exits when its standard input closes
    jvm.wait(timeout=1800)


def main(jar_dir: str, home: str | None) -> int:
    sys.path.insert(0, str(REPO / "jobs"))
    from crm_pipeline.settings import SparkSettings
    from crm_pipeline.spark import AOT_CACHE, AOT_CACHE_JAVA, CLASS_ARCHIVE, JAVA_HOME_RECORD, java_feature, java_home

    folder = Path(jar_dir).resolve()
    for name in (AOT_CACHE, CLASS_ARCHIVE, JAVA_HOME_RECORD):  # what an earlier setup built, maybe for another JDK
        (folder / name).unlink(missing_ok=True)
    settings = SparkSettings(jar_dir=folder)
    java = Path(home) if home else java_home(settings)
    feature = java_feature(java)
    if java is None or feature is None:
        print(f"no JDK found at {java} (set JAVA_HOME): Spark starts without a class archive", file=sys.stderr)
        return 0
    aot = feature >= AOT_CACHE_JAVA
    target = folder / (AOT_CACHE if aot else CLASS_ARCHIVE)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    options = (f"-XX:AOTCacheOutput={partial} -Xlog:aot=off -Xlog:cds=off" if aot
               else f"-XX:ArchiveClassesAtExit={partial} -Xlog:cds=off -Xlog:cds+dynamic=off")
    env = {**os.environ, "JAVA_HOME": str(java), "CRM_JAR_DIR": str(folder),
           "CRM_JAVA_OPTIONS": f"{SparkSettings.from_env().java_options} {options}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "jobs"), os.environ.get("PYTHONPATH")) if p)}
    print(f"building {target.name} for the JDK {feature} at {java}", flush=True)
    with tempfile.TemporaryFile("w+") as log:  # the JVM's own lines (the assembly's run prints its class path)
        done = subprocess.run([sys.executable, __file__, "--workload"], env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:
            log.seek(0)
            sys.stderr.write(log.read()[-20000:])
            raise SystemExit(f"building {target.name} failed (exit {done.returncode})")
    if not partial.is_file():
        print(f"no archive was written to {partial} (this JDK may not write one): Spark starts without one",
              file=sys.stderr)
        return 0
    partial.replace(target)
    (folder / JAVA_HOME_RECORD).write_text(f"{java}\n")
    print(f"{target} ({target.stat().st_size / 2**20:.0f} MiB), for {java}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--workload"]:
        workload()
        _exit_jvm()
        sys.exit(0)
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} JAR_DIR [JAVA_HOME]")
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
