"""Named fault points, for the crash tests: with `CRM_FAULT=<point>[:<n>]` in its environment, a
process kills its whole process group with SIGKILL the n-th time (default 1st) it passes that
point, as a lost machine or the OOM killer would: no `finally`, no atexit, no Spark shutdown.

Points: `verify` (a Spark task, while it reads and verifies a delivered file), `bronze` (a feed's
bronze commit done, nothing after it), `silver` (quarantine and silver committed, accounting not),
`rollup` (daily usage rewritten, daily contacts not), `gold` (a gold mart written, the rest of the
month not), `publish` (a warehouse table replaced inside the publish transaction). Unset, a point
costs one dictionary lookup. Task-side points count per worker process; Spark starts its Python
workers in process groups of their own, so `arm()` (called first thing by `crm`) names the
command's group in `CRM_FAULT_GROUP` for them to kill.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

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
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        os.killpg(int(os.environ.get("CRM_FAULT_GROUP") or os.getpgrp()), signal.SIGKILL)
