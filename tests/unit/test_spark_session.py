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
