"""The session's JVM settings: the options of SparkSettings reach the driver's JVM and the
executors' configuration, and CRM_JAVA_OPTIONS replaces them."""

from __future__ import annotations

from pathlib import Path

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


def _jdk(folder, version: str):
    """A stand-in Java home: its `release` file and a `bin/java`."""
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "java").write_text("")
    (folder / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\nOS_NAME="Linux"\n')
    return folder


def test_what_setup_built_is_mapped_by_the_jdk_it_suits_unless_the_options_name_their_own(tmp_path):
    from crm_pipeline.spark import AOT_CACHE, CLASS_ARCHIVE, class_archive_options

    jars = tmp_path / "jars"
    jars.mkdir()
    jdk17, jdk25 = _jdk(tmp_path / "jdk17", "17.0.15"), _jdk(tmp_path / "jdk25", "25.0.3")
    settings = SparkSettings(jar_dir=jars)
    assert class_archive_options(settings, jdk17) == ""  # none built (setup not run, or the JDK cannot)
    assert class_archive_options(settings, jdk25) == ""
    (jars / CLASS_ARCHIVE).write_bytes(b"archive")
    for home in (jdk17, jdk25):
        assert f"-XX:SharedArchiveFile={jars / CLASS_ARCHIVE}" in class_archive_options(settings, home).split()
    (jars / AOT_CACHE).write_bytes(b"cache")
    assert f"-XX:AOTCache={jars / AOT_CACHE}" in class_archive_options(settings, jdk25).split()
    # a JDK before 25 does not know the option and would not start with it
    assert f"-XX:SharedArchiveFile={jars / CLASS_ARCHIVE}" in class_archive_options(settings, jdk17).split()
    assert "AOTCache" not in class_archive_options(settings, jdk17)
    for own in ("-XX:SharedArchiveFile=/elsewhere.jsa", "-XX:ArchiveClassesAtExit=/new.jsa", "-XX:AOTCache=/x.aot",
                "-XX:AOTCacheOutput=/new.aot"):
        for home in (jdk17, jdk25):
            assert class_archive_options(SparkSettings(jar_dir=jars, java_options=own), home) == ""


def test_a_jdks_feature_release_is_read_from_its_release_file(tmp_path):
    from crm_pipeline.spark import java_feature

    for version, feature in (("25.0.3", 25), ("17.0.15", 17), ("21", 21), ("1.8.0_392", 8)):
        assert java_feature(_jdk(tmp_path / version, version)) == feature
    assert java_feature(tmp_path / "no-such-jdk") is None
    assert java_feature(None) is None


def test_the_driver_runs_on_java_home_else_the_jdk_setup_recorded_else_the_one_on_the_path(monkeypatch, tmp_path):
    import os
    import shutil

    from crm_pipeline.spark import JAVA_HOME_RECORD, java_home

    jars = tmp_path / "jars"
    jars.mkdir()
    settings = SparkSettings(jar_dir=jars)
    recorded, own = _jdk(tmp_path / "recorded", "25.0.3"), _jdk(tmp_path / "own", "21.0.2")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    on_path = shutil.which("java")
    assert java_home(settings) == (Path(os.path.realpath(on_path)).parent.parent if on_path else None)
    (jars / JAVA_HOME_RECORD).write_text(f"{recorded}\n")
    assert java_home(settings) == recorded
    monkeypatch.setenv("JAVA_HOME", str(own))
    assert java_home(settings) == own
    monkeypatch.delenv("JAVA_HOME")
    shutil.rmtree(recorded)  # a recorded JDK since removed: the path's again
    assert java_home(settings) == (Path(os.path.realpath(on_path)).parent.parent if on_path else None)


def test_the_session_runs_on_the_jdk_java_home_names(spark):
    from crm_pipeline.spark import java_home

    running = Path(spark.sparkContext._jvm.java.lang.System.getProperty("java.home")).resolve()
    assert running == java_home(SparkSettings.from_env()).resolve()


def test_a_jvm_ignores_an_archive_or_cache_it_cannot_use_without_a_word(tmp_path):
    """A stale or foreign archive or cache (another JDK, other jars) must not stop or clutter a step:
    the options `class_archive_options` gives the JVM setup chose make it start as usual, silently."""
    import subprocess

    from crm_pipeline.spark import AOT_CACHE, CLASS_ARCHIVE, class_archive_options, java_home

    home = java_home(SparkSettings.from_env())
    for name in (CLASS_ARCHIVE, AOT_CACHE):
        (tmp_path / name).write_bytes(b"not an archive" * 100)
    options = class_archive_options(SparkSettings(jar_dir=tmp_path), home).split()
    assert options
    proc = subprocess.run([str(home / "bin" / "java"), *options, "-version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert not any(w in (proc.stdout + proc.stderr).lower() for w in ("archive", "aot", "cache")), proc.stderr


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
