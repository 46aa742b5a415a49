"""bench/jvm_profile.py: CPU samples of async-profiler's collapsed stacks, summed by thread and work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "jvm_profile", Path(__file__).resolve().parents[2] / "bench" / "jvm_profile.py")
jvm_profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jvm_profile)

WRITE = "org/apache/spark/sql/execution/datasources/FileFormatDataWriter.write"
CACHE = "org/apache/spark/sql/execution/columnar/CachedRDDBuilder$$anon$2.next"
SHUFFLE = "org/apache/spark/shuffle/sort/BypassMergeSortShuffleWriter.write"
STACKS = [
    # a task writing Parquet, pulling a cache build, in LZ4
    f"[Executor task launch worker for task 3.0 in stage 2.0 (TID 5) tid=11];java/lang/Thread.run;{WRITE};{CACHE};"
    "net/jpountz/lz4/LZ4JNI.LZ4_compress_limitedOutput;LZ4_compress_fast_extState 7\n",
    # a task writing shuffle output, in a hash map of an aggregation
    f"[Executor task idle worker#2 tid=12];java/lang/Thread.run;{SHUFFLE};"
    "org/apache/spark/unsafe/map/BytesToBytesMap.safeLookup 3\n",
    # a task writing Parquet, in a frame no kind names
    f"[Executor task idle worker#2 tid=12];java/lang/Thread.run;{WRITE};java/util/HashMap.getNode 2\n",
    # a task doing something no kind names
    "[Executor task idle worker#3 tid=13];java/lang/Thread.run;java/util/HashMap.getNode 1\n",
    "[C2 CompilerThre tid=7];Compile::Compile 20\n",
    "[Thread-4 tid=26];py4j/ClientServerConnection.run;org/apache/spark/sql/Dataset.persist 4\n",
    "[GC Thread#0 tid=8];ParallelTask 2\n",
    "[Signal Dispatcher tid=9];os::signal_wait 1\n",
    "not a stack line\n",
]


def test_samples_add_up_by_thread_kind():
    s = jvm_profile.summarize(STACKS, interval_s=0.5)
    assert s["threads"] == {"Spark tasks": 6.5, "JIT compilers": 10.0, "driver: calls from Python (py4j)": 2.0,
                            "garbage collector": 1.0, "other JVM threads": 0.5}


def test_a_task_sample_goes_to_the_innermost_work_its_stack_names():
    s = jvm_profile.summarize(STACKS, interval_s=1.0)
    assert s["tasks"] == {"in-memory cache build (with the stage it pulls)": 7,
                          "shuffle write (with the stage it pulls)": 3,
                          "Parquet write (with the stage it pulls)": 2, "other": 1}
    assert s["leaf_kinds"] == {"LZ4 (shuffle and block compression)": 7, "hash maps of aggregations": 3}
    assert s["leaves"].most_common(1) == [("LZ4_compress_fast_extState", 7)]
    assert s["leaves"]["java/util/HashMap.getNode"] == 3


@pytest.mark.parametrize("name, kind", [
    ("C1 CompilerThre", "JIT compilers"), ("Executor task launch worker for task 1.0", "Spark tasks"),
    ("Thread-12", "driver: calls from Python (py4j)"), ("Thread-12-x", "other JVM threads"),
    ("dag-scheduler-event-loop", "driver: scheduler and query stages"), ("VM Thread", "garbage collector"),
])
def test_threads_are_told_apart_by_name(name, kind):
    assert jvm_profile.thread_kind(name) == kind
