"""Named fault points, for the crash tests: with `CRM_FAULT=<point>[:<n>]` in its environment, a
process kills its whole process group with SIGKILL the n-th time (default 1st) it passes that
point, as a lost machine or the OOM killer would: no `finally`, no atexit, no Spark shutdown.

Points: `verify` (a Spark task, while it reads and verifies a delivered file), `bronze` (a feed's
bronze commit done, nothing after it), `silver` (quarantine and silver committed, accounting not),
`rollup` (daily usage rewritten, daily contacts not), `gold` (a gold table of the month written: one
of its summaries, built first, or a mart; the rest of the month not), `publish` (a warehouse table
replaced inside the publish transaction). Unset, a point costs one dictionary lookup. Task-side
points count per worker process; Spark starts its Python workers in process groups of their own,
so `arm()` (called first thing by `crm`) names the command's group in `CRM_FAULT_GROUP` for them
to kill.

`CRM_FAULT` may name several points, comma-separated (`verify,bronze:1,rollup`), and one point
several times (`bronze:1,bronze:2`). With `CRM_FAULT_ONCE=<folder>`, each of them kills once
across every process given that environment (a file in the folder records that it did): the
tries of an Airflow task, retried after each kill, die at one point after the other and the
last one finishes.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

POINTS = ("verify", "bronze", "silver", "rollup", "gold", "publish")
_passed: Counter = Counter()


def arm() -> None:
    """In a process started with CRM_FAULT: name its process group for the workers it starts."""
    if os.environ.get("CRM_FAULT"):
        os.environ.setdefault("CRM_FAULT_GROUP", str(os.getpgrp()))


def point(name: str) -> None:
    wanted = os.environ.get("CRM_FAULT")
    if not wanted:
        return
    listed = [(fault.strip(), int(nth or 1)) for fault in wanted.split(",")
              for target, _, nth in [fault.strip().partition(":")] if target == name]
    if not listed:
        return
    _passed[name] += 1  # one passage, however many times the point is listed (`gold:1,gold:5`)
    for fault, nth in listed:
        if _passed[name] == nth and _first_time(fault):
            os.killpg(int(os.environ.get("CRM_FAULT_GROUP") or os.getpgrp()), signal.SIGKILL)


def fired(folder: str | Path) -> list[str]:
    """The faults that killed a process under `CRM_FAULT_ONCE=<folder>`, in name order."""
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []


def _first_time(fault: str) -> bool:
    """Whether `fault` may kill now: always, unless CRM_FAULT_ONCE names a folder where it has
    already been recorded (recorded here, before the kill)."""
    folder = os.environ.get("CRM_FAULT_ONCE")
    if not folder:
        return True
    os.makedirs(folder, exist_ok=True)
    try:
        os.close(os.open(os.path.join(folder, fault), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
