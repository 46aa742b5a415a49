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
