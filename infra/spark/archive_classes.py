"""Build the class-data archive that local-mode Spark drivers start from (`make setup`).

A driver JVM loads, parses and verifies some thousands of classes of Spark, Delta and their
libraries before its first job, in every `crm` step. An application class-data sharing archive
(the JDK's CDS: `-XX:ArchiveClassesAtExit` writes it, `-XX:SharedArchiveFile` maps it read-only)
holds them ready: a session plus its first Delta read took 18.5 s without and 12 s with it on
2 cores (docs/benchmarks.md). `crm_pipeline.spark.build_session` uses the archive when
`<jar dir>/spark-classes.jsa` exists; a JVM whose JDK or class path differs from the archive's
ignores it, silently, and loads its classes as usual.

    python infra/spark/archive_classes.py infra/jars/lib/spark-classes.jsa

The archive is dumped when the JVM exits after a small workload that touches what the steps use
(a Delta write, replaceWhere, merge and read, joins, aggregations, windows, Arrow to Python).
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
    jvm = spark.sparkContext._gateway.proc  # the JVM pyspark started, which dumps the archive as it exits
    spark.stop()
    jvm.stdin.close()  # the gateway server exits when its standard input closes
    jvm.wait(timeout=600)


def main(target: str) -> int:
    from crm_pipeline.settings import SparkSettings

    target_path = Path(target).resolve()
    partial = target_path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    env = {**os.environ, "CRM_SHUFFLE_PARTITIONS": "2", "CRM_DRIVER_MEMORY": "1g",
           "CRM_JAVA_OPTIONS": f"{SparkSettings.from_env().java_options} -XX:ArchiveClassesAtExit={partial} "
                               "-Xlog:cds=off -Xlog:cds+dynamic=off",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "jobs"), os.environ.get("PYTHONPATH")) if p)}
    subprocess.run([sys.executable, __file__, "--workload"], env=env, check=True)
    if not partial.is_file():
        print(f"no class-data archive was written to {partial} (this JDK may not support -XX:ArchiveClassesAtExit); "
              "Spark starts without one", file=sys.stderr)
        return 0
    partial.replace(target_path)
    print(f"class-data archive {target_path} ({target_path.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--workload"]:
        workload()
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} ARCHIVE")
    sys.exit(main(sys.argv[1]))
