"""The one place a SparkSession is built (besides the test fixture, which calls this too)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from crm_pipeline.settings import REPO_ROOT, SparkSettings

log = logging.getLogger(__name__)
LOG4J = REPO_ROOT / "infra" / "spark" / "log4j2.properties"
#: An optimized Delta write hashes its rows by partition value into this many reducers (Delta's
#: default, 2000, whatever the cluster) and writes each reducer's rows in tasks of up to
#: `optimizeWrite.binSize`; with as many reducers as shuffle partitions, a write of many small
#: partition values (a batch of 247 days of a small feed) takes a few tasks instead of one per day,
#: while a large partition value is still split into bins over many tasks.
MAX_OPTIMIZED_WRITE_SHUFFLE = "spark.databricks.delta.optimizeWrite.maxShufflePartitions"
OPTIMIZED_WRITE_BIN = "spark.databricks.delta.optimizeWrite.binSize"
CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
ADAPTIVE = "spark.sql.adaptive.enabled"
#: the class-data archive local-mode drivers start from, in the jar folder (infra/spark/archive_classes.py)
CLASS_ARCHIVE = "spark-classes.jsa"
#: on a JDK of `AOT_CACHE_JAVA` or later, the ahead-of-time cache that replaces it: the classes
#: loaded and linked, and the profiles of the methods a training run made hot
AOT_CACHE = "spark-classes.aot"
AOT_CACHE_JAVA = 25
#: the Java home the setup built the archive or cache for (the Makefile's SPARK_JAVA_HOME), in the jar folder
JAVA_HOME_RECORD = "java-home"
#: Hadoop's local file system without a `chmod` or `readlink` process (infra/localfs), built at setup
#: into this folder of the jar folder, and its classes for Hadoop's two APIs (`FileSystem`, `FileContext`)
LOCAL_FS_JAR = "local/crm-localfs.jar"
LOCAL_FS_CLASS = "org.crmpipeline.fs.NioLocalFileSystem"
LOCAL_FS_CONTEXT_CLASS = "org.crmpipeline.fs.NioLocalFs"


def jar_paths(settings: SparkSettings) -> list[str]:
    jars = sorted(str(p) for p in settings.jar_dir.glob("*.jar"))
    if not any("delta-spark" in j for j in jars):
        raise FileNotFoundError(
            f"no Delta jars in {settings.jar_dir}: run `make jars` (Maven resolves infra/jars/pom.xml)"
        )
    return jars


def java_home(settings: SparkSettings) -> Path | None:
    """The Java home whose JVM a driver this process starts runs on: `JAVA_HOME` when set, else the
    one `make setup` recorded in the jar folder (`JAVA_HOME_RECORD`), else the `java` on the path's
    (None when there is none)."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    record = settings.jar_dir / JAVA_HOME_RECORD
    if record.is_file():
        recorded = Path(record.read_text().strip())
        if (recorded / "bin" / "java").is_file():
            return recorded
    java = shutil.which("java")
    return Path(os.path.realpath(java)).parent.parent if java else None


def java_feature(home: Path | None) -> int | None:
    """The feature release (17, 21, 25, ...) of the JDK at `home`, from its `release` file."""
    try:
        text = (home / "release").read_text() if home else ""
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(?:1\.)?(\d+)', text, re.MULTILINE)
    return int(match.group(1)) if match else None


def class_archive_options(settings: SparkSettings, home: Path | None = None) -> str:
    """JVM options that map what setup built in the jar folder to start the driver from, if it built
    one: on a JDK of `AOT_CACHE_JAVA` or later the ahead-of-time cache (`AOT_CACHE`: classes loaded
    and linked, and method profiles, so the compilers start from a trained run's), else the
    class-data archive (`CLASS_ARCHIVE`: classes parsed and verified, about 6 s of each step's start
    on 2 cores). A JVM whose JDK or class path differs from the one they were built with ignores
    them, without a word; none when the JVM options name an archive or cache of their own."""
    own = ("SharedArchiveFile", "ArchiveClassesAtExit", "AOTCache", "AOTMode", "AOTConfiguration")
    if any(o in settings.java_options for o in own):
        return ""
    cache = settings.jar_dir / AOT_CACHE
    if cache.is_file() and (java_feature(home or java_home(settings)) or 0) >= AOT_CACHE_JAVA:
        return f"-XX:AOTCache={cache} -Xlog:aot=off -Xlog:cds=off"
    archive = settings.jar_dir / CLASS_ARCHIVE
    if not archive.is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"


def local_fs_options(settings: SparkSettings) -> dict[str, str]:
    """The settings that give a local-mode driver the local file system of `LOCAL_FS_JAR`, if it
    was built (none on a cluster, whose executors would need the class too).

    Without Hadoop's native library, which pyspark does not ship, Hadoop's own local file system
    starts a `chmod` process for every file and folder it creates, about thirty per Parquet file a
    task writes (494 small files took 3.7 s to write, 1.0 s through this one), and a `readlink`
    for every file status asked through a `FileContext`, as Delta's log store does, hundreds per
    commit. The jar goes on the driver's class path (spark-submit reads `spark.jars` through the
    file system already)."""
    jar = settings.jar_dir / LOCAL_FS_JAR
    if not settings.master.startswith("local") or not jar.is_file():
        return {}
    return {"spark.driver.extraClassPath": str(jar), "spark.hadoop.fs.file.impl": LOCAL_FS_CLASS,
            "spark.hadoop.fs.AbstractFileSystem.file.impl": LOCAL_FS_CONTEXT_CLASS}


def build_session(settings: SparkSettings | None = None) -> SparkSession:
    """Build (or return) the Delta-enabled session.

    Jars come from the local folder resolved at setup; nothing is downloaded at run time.
    Must run before anything else starts a session (GX does when none exists).
    """
    settings = settings or SparkSettings.from_env()
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    builder = SparkSession.builder
    if submitted():  # spark-submit chose the master, the jars, the name, the memory and the JVM options
        log.info("started by spark-submit: master, jars, driver memory and JVM options as submitted")
    else:
        builder = (builder.master(settings.master).appName(settings.app_name)
                   .config("spark.jars", ",".join(jar_paths(settings)))
                   .config("spark.driver.memory", settings.driver_memory))
        if settings.java_options:  # else the executors keep what the cluster's spark-defaults give them
            builder = builder.config("spark.executor.extraJavaOptions", settings.java_options)
        for key, value in local_fs_options(settings).items():
            builder = builder.config(key, value)
        home = java_home(settings)
        if home and not os.environ.get("JAVA_HOME"):  # the JDK setup chose: pyspark starts the driver from it
            os.environ["JAVA_HOME"] = str(home)
    builder = (
        builder
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "Asia/Shanghai")
        # BOSS times are local wall-clock times without a zone: keep them that way end to end.
        .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
        .config("spark.driver.extraJavaOptions",
                f"{settings.java_options} {class_archive_options(settings)} -Dlog4j2.configurationFile={LOG4J}".strip())
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Arrow batches to Python (the typing of every record) are cut at 10,000 rows only: a
        # byte limit makes the writer re-measure every column's buffers after each row
        .config("spark.sql.execution.arrow.maxBytesPerBatch", str(2**31 - 1))
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.databricks.delta.stats.collect", "true")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .config("spark.sql.files.maxRecordsPerFile", "5000000")
    )
    for key, value in settings.extra_conf:
        builder = builder.config(key, value)
    if settings.shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    deployed = spark.sparkContext.getConf()  # what spark-submit or spark-defaults set: left as they are
    if not deployed.contains(ADAPTIVE):
        spark.conf.set(ADAPTIVE, str(adaptive_execution(settings, spark.sparkContext.master)).lower())
    if not settings.shuffle_partitions:
        # Parallelism follows the cluster: 4 shuffle partitions per core; on a cluster, adaptive
        # query execution coalesces small ones and splits skewed ones.
        spark.conf.set("spark.sql.shuffle.partitions", str(4 * spark.sparkContext.defaultParallelism))
    if not deployed.contains(MAX_OPTIMIZED_WRITE_SHUFFLE):
        spark.conf.set(MAX_OPTIMIZED_WRITE_SHUFFLE, spark.conf.get("spark.sql.shuffle.partitions"))
    if not deployed.contains(OPTIMIZED_WRITE_BIN):
        # bins (files, one task each) of 128 MiB of shuffled rows instead of Delta's 512: a day of a
        # million subscribers' voice records (370 MB shuffled) was written by one task while the
        # other core waited; a larger write still gets files of that size, over more tasks
        spark.conf.set(OPTIMIZED_WRITE_BIN, "128")
    log.info("spark session %s on %s, adaptive execution %s", spark.version, spark.sparkContext.master,
             spark.conf.get(ADAPTIVE))
    return spark


def adaptive_execution(settings: SparkSettings, master: str) -> bool:
    """Whether a session on `master` runs adaptive query execution: as `settings.adaptive` says, else
    on a cluster only. Adaptive execution runs each shuffle stage of a query as a job of its own and
    plans the rest of the query again after it, generating and compiling its code anew. In local
    mode its partitions are few already (4 per core) and the JVM's compilers share the cores with
    the tasks: the re-planning cost more than the merged partitions and runtime broadcasts saved
    (docs/benchmarks.md). A cluster's many partitions are what it merges."""
    if settings.adaptive is not None:
        return settings.adaptive
    return not master.startswith("local")


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """The session's SQL `settings` changed inside the block, and set back as they were after it."""
    before = {k: spark.conf.get(k) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)


def uncompressed_cache(spark: SparkSession):
    """Frames persisted inside are cached as plain columns (Spark reads the setting when `persist`
    is called, not when the cache is built). Spark's in-memory compression tries run-length and
    dictionary encoding on every column of every 10,000-row batch: for a day's records (unique
    ids, numbers, free text) that was half the time of the job building the cache. For a cache a
    few scans read soon after; it takes more memory and spills to disk beyond it."""
    return session_conf(spark, {CACHE_COMPRESSED: "false"})


def partitions_for(spark: SparkSession, stored_bytes: int) -> int:
    """Shuffle partitions for a shuffle whose every row reaches one hash aggregation: the session's
    count, or more, so that each holds about `spark.sql.adaptive.advisoryPartitionSizeInBytes` of
    the stored (Parquet) input. Adaptive execution can merge small partitions but never split a
    large one: with the fixed count, each reducer of the calling circle (three months of contact
    pairs) at 1 M subscribers held 18 M rows and spilled 12 GB to disk while aggregating them."""
    target = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes(
        spark.conf.get("spark.sql.adaptive.advisoryPartitionSizeInBytes"))
    return max(int(spark.conf.get("spark.sql.shuffle.partitions")), -(-stored_bytes // target))


def submitted() -> bool:
    """Whether this process is a driver spark-submit started (Airflow's SparkSubmitOperator): its
    JVM is already running with the submitted master, jars and memory."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
