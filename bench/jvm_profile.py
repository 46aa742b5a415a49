"""Where the CPU of one `crm` command goes: by process (the JVM, the Python driver, Spark's Python
workers), in the JVM by thread (the JIT compilers, Spark's task threads, the driver's py4j threads,
the garbage collector), and in the task threads by what they were doing.

    make profiler    # once: async-profiler's native agent, from Maven Central
    .venv/bin/python bench/jvm_profile.py [--interval-ms 10] [--top 15] [--stacks FILE] -- demo --dir var/demo-prof

The command runs as a child `crm` process whose JVM carries async-profiler
(`tools.profiler:async-profiler`, a Java agent sampling the stack of every thread on a CPU timer,
no perf events needed), while this process reads the CPU time of every process of the child's tree
(psutil). On a machine whose cores are saturated, CPU seconds say what the wall time is made of;
on this 2-core machine a whole `crm demo` is, and its JIT compilers spend about as much CPU as
Spark's tasks (docs/benchmarks.md, "where the CPU goes").

A task thread's sample goes to the kind of `TASK_KINDS` of the innermost frame that names one (a
Parquet write pulls its rows through the whole stage, so what the stage pipelines below it, a
shuffle read, a sort, a projection, counts as the write; a cache built inside it counts as the
cache). The sampled stacks are kept (`--stacks`, async-profiler's collapsed format, one line per
distinct stack) for a flame graph or a closer look. Not a timing benchmark: the sampling costs a
few percent.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "infra" / "jars" / "lib" / "profiler" / "libasyncProfiler.so"

#: (kind, marker) for the JVM's threads by name (Linux keeps the first 15 characters)
THREAD_KINDS = (
    ("JIT compilers", re.compile(r"^C\d CompilerThre")),
    ("Spark tasks", re.compile(r"^Executor task")),
    ("driver: calls from Python (py4j)", re.compile(r"^Thread-\d+$")),
    ("garbage collector", re.compile(r"^(GC Thread|VM Thread)")),
    ("code cache sweeper", re.compile(r"^Sweeper thread")),
    ("driver: scheduler and query stages", re.compile(
        r"^(dag-scheduler|shuffle-exchange|broadcast-exchange|ResultQueryStage|task-result-getter|dispatcher)")),
)
#: (kind, marker) for what a task thread's sample was doing (`task_kind`)
TASK_KINDS = (
    ("compile generated code (Janino)", "CodeGenerator$.doCompile"),
    ("task deserialization", "JavaSerializerInstance.deserialize"),
    ("Parquet write (with the stage it pulls)", "FileFormatDataWriter"),
    ("in-memory cache build (with the stage it pulls)", "CachedRDDBuilder"),
    ("shuffle write (with the stage it pulls)", "ShuffleWriter.write"),
    ("Arrow batches to and from Python", "python/"),
    ("collect to the driver (with the stage it pulls)", "ResultTask.runTask"),
)
#: leaf markers counted over every task sample, whichever kind it went to
LEAF_KINDS = (
    ("LZ4 (shuffle and block compression)", ("LZ4", "XXH32")),
    ("snappy (Parquet pages)", ("snappy",)),
    ("column builders of the in-memory cache", ("ColumnBuilder",)),
    ("Parquet dictionaries and statistics", ("parquet/io/api/Binary", "OpenHashMap", "Statistics")),
    ("hash maps of aggregations", ("BytesToBytesMap", "FastHashMap", "AggregationMap")),
    ("UTF8String objects", ("UTF8String.<init>",)),
)


def thread_kind(name: str) -> str:
    for kind, pattern in THREAD_KINDS:
        if pattern.search(name):
            return kind
    return "other JVM threads"


def task_kind(frames: list[str]) -> str:
    """The kind of work of a task thread's stack (outermost frame first): that of the innermost frame
    holding a marker of `TASK_KINDS`, else "other"."""
    for frame in reversed(frames):
        for kind, marker in TASK_KINDS:
            if marker in frame:
                return kind
    return "other"


def summarize(lines, interval_s: float, top: int = 15) -> dict:
    """CPU seconds by thread kind, by task kind, by leaf kind, and the task threads' top leaf frames,
    from async-profiler's collapsed stacks with thread names (`[name tid=N];frame;... count`)."""
    threads: Counter = Counter()
    tasks: Counter = Counter()
    leaf_kinds: Counter = Counter()
    leaves: Counter = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        name = frames[0].strip("[]").rsplit(" tid=", 1)[0]
        seconds = int(count) * interval_s
        kind = thread_kind(name)
        threads[kind] += seconds
        if kind != "Spark tasks":
            continue
        tasks[task_kind(frames)] += seconds
        leaf = frames[-1]
        leaves[leaf] += seconds
        for k, markers in LEAF_KINDS:
            if any(m in leaf for m in markers):
                leaf_kinds[k] += seconds
                break
    return {"threads": threads, "tasks": tasks, "leaf_kinds": leaf_kinds,
            "leaves": Counter(dict(leaves.most_common(top)))}


def process_kind(process) -> str | None:
    """The kind of a process of the child's tree: the JVM, a Python worker of Spark, the driver."""
    import psutil

    try:
        exe, cmdline = process.exe(), " ".join(process.cmdline())
    except psutil.Error:
        return None
    if exe.endswith("/java"):
        return "JVM"
    if "pyspark.daemon" in cmdline or "pyspark.worker" in cmdline:
        return "Python workers"
    return "Python driver" if "python" in Path(exe).name else "other"


def watch(root: int, done: threading.Event, seen: dict) -> None:
    """Keep the latest CPU seconds and kind of every process of `root`'s tree, by pid, until `done`:
    those it has seen stay watched after `root` exits (its JVM outlives it while it stops). The kind
    is asked again each time: a script may exec java."""
    import psutil

    parent, known = psutil.Process(root), {}
    while True:
        try:
            known.update((p.pid, p) for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            pass
        for pid, process in list(known.items()):
            try:
                times, kind = process.cpu_times(), process_kind(process)
            except psutil.Error:
                del known[pid]
                continue
            if kind is not None:
                seen[pid] = (times.user + times.system, kind)
        if done.is_set():
            return
        done.wait(0.5)


def wait_gone(pids: list[int], timeout_s: float = 120.0) -> None:
    """Wait until none of `pids` runs (the JVM writes the samples as it stops, after its driver exits)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    running.append(pid)
            except psutil.Error:
                pass
        if not running:
            return
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval-ms", type=int, default=10, help="sampling interval of CPU time (default 10)")
    ap.add_argument("--top", type=int, default=15, help="task threads' leaf frames to list")
    ap.add_argument("--stacks", help="keep the collapsed stacks in this file")
    ap.add_argument("crm", nargs=argparse.REMAINDER, help="-- then the arguments of `crm`")
    args = ap.parse_args(argv)
    crm_args = args.crm[1:] if args.crm[:1] == ["--"] else args.crm
    if not crm_args:
        ap.error("name the crm command after --, e.g. -- demo --dir var/demo-prof")
    if not AGENT.is_file():
        sys.exit(f"no profiler agent at {AGENT}: run `make profiler` (Maven fetches async-profiler)")
    stacks = args.stacks or tempfile.mkstemp(prefix="crm-stacks-", suffix=".txt")[1]
    agent = f"-agentpath:{AGENT}=start,event=itimer,interval={args.interval_ms}ms,threads,file={stacks},collapsed"
    from crm_pipeline.settings import SparkSettings

    env = dict(os.environ, CRM_JAVA_OPTIONS=f"{SparkSettings.from_env().java_options} {agent}")
    crm = Path(sys.executable).with_name("crm")
    started = time.monotonic()
    child = subprocess.Popen([str(crm), *crm_args], env=env)
    done, seen = threading.Event(), {}
    watcher = threading.Thread(target=watch, args=(child.pid, done, seen), daemon=True)
    watcher.start()
    rc = child.wait()
    wait_gone([pid for pid, (_, kind) in list(seen.items()) if kind == "JVM"])
    done.set()
    watcher.join()
    wall = time.monotonic() - started

    by_process: Counter = Counter()
    for seconds, kind in seen.values():
        by_process[kind] += seconds
    print(f"\ncrm {' '.join(crm_args)}: exit {rc}, {wall:.1f} s wall, "
          f"{sum(by_process.values()):.1f} CPU-s on {os.cpu_count()} cores")
    for kind, seconds in by_process.most_common():
        if seconds >= 0.05:
            print(f"  {seconds:8.1f} CPU-s  {kind}")
    with open(stacks, encoding="utf-8", errors="replace") as fh:
        s = summarize(fh, args.interval_ms / 1000, args.top)
    for title, key in (("JVM threads (sampled)", "threads"), ("Spark task threads, by work", "tasks"),
                       ("Spark task threads, by innermost frame", "leaf_kinds"),
                       ("Spark task threads, top innermost frames", "leaves")):
        print(f"\n{title}:")
        for kind, seconds in s[key].most_common():
            print(f"  {seconds:8.1f} CPU-s  {kind}")
    print(f"\nstacks: {stacks}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
