"""The session's JVM settings: the options of SparkSettings reach the driver's JVM and the
executors' configuration, and CRM_JAVA_OPTIONS replaces them."""

from __future__ import annotations

import pytest

from crm_pipeline.settings import SparkSettings

pytestmark = pytest.mark.spark


def test_the_driver_jvm_runs_with_the_settings_java_options_and_the_executors_get_them(spark):
    options = SparkSettings.from_env().java_options.split()
    assert options  # the pipeline sets some by default
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(options) <= set(arguments), arguments
    assert set(options) <= set(spark.sparkContext.getConf().get("spark.executor.extraJavaOptions").split())


def test_crm_java_options_replaces_the_default_and_empty_means_the_jvms_own(monkeypatch):
    monkeypatch.setenv("CRM_JAVA_OPTIONS", "-XX:+UseSerialGC -Xss4m")
    assert SparkSettings.from_env().java_options == "-XX:+UseSerialGC -Xss4m"
    monkeypatch.setenv("CRM_JAVA_OPTIONS", "")
    assert SparkSettings.from_env().java_options == ""
    monkeypatch.delenv("CRM_JAVA_OPTIONS")
    assert SparkSettings.from_env().java_options == SparkSettings().java_options


def test_a_class_data_archive_in_the_jar_folder_is_mapped_unless_the_options_name_one(tmp_path):
    from crm_pipeline.spark import CLASS_ARCHIVE, class_archive_options

    settings = SparkSettings(jar_dir=tmp_path)
    assert class_archive_options(settings) == ""  # none built (setup not run, or the JDK cannot)
    (tmp_path / CLASS_ARCHIVE).write_bytes(b"archive")
    assert f"-XX:SharedArchiveFile={tmp_path / CLASS_ARCHIVE}" in class_archive_options(settings).split()
    for own in ("-XX:SharedArchiveFile=/elsewhere.jsa", "-XX:ArchiveClassesAtExit=/new.jsa"):
        assert class_archive_options(SparkSettings(jar_dir=tmp_path, java_options=own)) == ""


def test_a_jvm_ignores_an_archive_it_cannot_use_without_a_word(tmp_path):
    """A stale or foreign archive (another JDK, other jars) must not stop or clutter a step: the
    options `class_archive_options` gives make the JVM start as usual, silently."""
    import subprocess

    from crm_pipeline.spark import CLASS_ARCHIVE, class_archive_options

    (tmp_path / CLASS_ARCHIVE).write_bytes(b"not an archive" * 100)
    options = class_archive_options(SparkSettings(jar_dir=tmp_path)).split()
    proc = subprocess.run(["java", *options, "-version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "archive" not in (proc.stdout + proc.stderr).lower(), proc.stderr


def test_a_local_driver_writes_through_the_local_file_system_built_at_setup_and_sets_permissions_itself(
        spark, tmp_path):
    """`make setup` builds infra/localfs; a local-mode driver's `file:` file system is that one,
    and it sets a file's permissions (without starting a `chmod`) as Hadoop's own would."""
    import os
    import stat

    from crm_pipeline.spark import LOCAL_FS_CLASS, local_fs_options

    settings = SparkSettings.from_env()
    assert local_fs_options(settings)["spark.hadoop.fs.file.impl"] == LOCAL_FS_CLASS  # built by setup
    jvm = spark.sparkContext._jvm
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI("file:///"), hadoop)
    assert fs.getClass().getName() == LOCAL_FS_CLASS
    target = tmp_path / "f.txt"
    target.write_text("x")
    for mode in (0o640, 0o755, 0o600):
        fs.setPermission(jvm.org.apache.hadoop.fs.Path(str(target)),
                         jvm.org.apache.hadoop.fs.permission.FsPermission(jvm.java.lang.Short(mode)))
        assert stat.S_IMODE(os.stat(target).st_mode) == mode
    spark.range(3).write.parquet(str(tmp_path / "out"))  # a write through it reads back whole
    assert spark.read.parquet(str(tmp_path / "out")).count() == 3


def test_a_local_drivers_file_context_tells_links_from_files_as_hadoops_own_does(spark, tmp_path):
    """Delta's log store works through a `FileContext`: the local one built at setup answers file
    and link statuses (without starting a `readlink`) as Hadoop's own local one does."""
    import os

    from crm_pipeline.spark import LOCAL_FS_CONTEXT_CLASS

    jvm = spark.sparkContext._jvm
    local = jvm.java.net.URI("file:///")
    context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(local, spark.sparkContext._jsc.hadoopConfiguration())
    assert context.getDefaultFileSystem().getClass().getName() == LOCAL_FS_CONTEXT_CLASS
    hadoops = jvm.org.apache.hadoop.fs.FileContext.getFileContext(local, jvm.org.apache.hadoop.conf.Configuration())
    assert hadoops.getDefaultFileSystem().getClass().getName() == "org.apache.hadoop.fs.local.LocalFs"
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "file", tmp_path / "link")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")

    def status(fc, name):
        s = fc.getFileLinkStatus(jvm.org.apache.hadoop.fs.Path(str(tmp_path / name)))
        return (s.isSymlink(), s.isFile(), s.isDirectory(), s.getLen(), s.getModificationTime(),
                str(s.getPath()), str(s.getSymlink()) if s.isSymlink() else None)

    for name in ("file", "folder", "link", "dangling"):
        assert status(context, name) == status(hadoops, name), name
    assert status(context, "link")[0] and not status(context, "file")[0]
    with pytest.raises(Exception, match="FileNotFound"):
        status(context, "missing")


def test_only_a_local_driver_gets_the_local_file_system_and_only_once_built(tmp_path):
    from crm_pipeline.spark import LOCAL_FS_CLASS, LOCAL_FS_CONTEXT_CLASS, LOCAL_FS_JAR, local_fs_options

    assert local_fs_options(SparkSettings(jar_dir=tmp_path)) == {}  # not built
    (tmp_path / LOCAL_FS_JAR).parent.mkdir(parents=True)
    (tmp_path / LOCAL_FS_JAR).write_bytes(b"jar")
    assert local_fs_options(SparkSettings(jar_dir=tmp_path)) == {
        "spark.driver.extraClassPath": str(tmp_path / LOCAL_FS_JAR), "spark.hadoop.fs.file.impl": LOCAL_FS_CLASS,
        "spark.hadoop.fs.AbstractFileSystem.file.impl": LOCAL_FS_CONTEXT_CLASS}
    assert local_fs_options(SparkSettings(jar_dir=tmp_path, master="spark://127.0.0.1:7077")) == {}


def test_adaptive_execution_is_off_in_local_mode_and_on_a_cluster_unless_the_settings_say(monkeypatch):
    from crm_pipeline.spark import adaptive_execution

    assert not adaptive_execution(SparkSettings(), "local[2]")
    assert not adaptive_execution(SparkSettings(), "local[*]")
    assert adaptive_execution(SparkSettings(), "spark://127.0.0.1:7077")
    assert adaptive_execution(SparkSettings(), "yarn")
    assert adaptive_execution(SparkSettings(adaptive=True), "local[2]")
    assert not adaptive_execution(SparkSettings(adaptive=False), "spark://127.0.0.1:7077")
    for value, expected in (("on", True), ("OFF", False), ("", None)):
        monkeypatch.setenv("CRM_ADAPTIVE_EXECUTION", value)
        assert SparkSettings.from_env().adaptive is expected
    monkeypatch.setenv("CRM_ADAPTIVE_EXECUTION", "yes")
    with pytest.raises(ValueError, match="CRM_ADAPTIVE_EXECUTION='yes': expected on or off"):
        SparkSettings.from_env()


def test_the_local_session_plans_without_adaptive_execution(spark):
    from crm_pipeline.spark import ADAPTIVE

    assert spark.sparkContext.master.startswith("local")
    assert spark.conf.get(ADAPTIVE) == "false"
    ids = spark.range(100)
    rows = ids.groupBy((ids.id % 3).alias("k")).count()
    assert "AdaptiveSparkPlan" not in rows._jdf.queryExecution().executedPlan().toString()
    assert sorted(r["count"] for r in rows.collect()) == [33, 33, 34]
