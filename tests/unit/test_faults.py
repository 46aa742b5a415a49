"""Fault points (crm_pipeline.faults), each in a process of its own: a listed point kills its
process group at its n-th passage; under CRM_FAULT_ONCE it kills once across processes, as the
tries of a retried Airflow task meet it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from crm_pipeline.faults import fired

#: passes `bronze` twice, then `silver` once, printing after each passage it survived
SCRIPT = ("from crm_pipeline import faults; faults.arm()\n"
          "for p in ('bronze', 'bronze', 'silver'):\n"
          "    faults.point(p); print(p, flush=True)\n")


def _run(fault: str, once=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_FAULT")}
    env.update(CRM_FAULT=fault, **({"CRM_FAULT_ONCE": str(once)} if once else {}))
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60,
                          start_new_session=True)  # the kill takes the process group: not pytest's


def test_a_point_kills_at_its_nth_passage():
    killed = _run("bronze:2")
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["bronze"]
    assert _run("silver").stdout.split() == ["bronze", "bronze"]


def test_without_once_a_listed_point_kills_every_process_that_passes_it():
    assert [_run("verify,silver").returncode for _ in range(2)] == [-signal.SIGKILL] * 2


def test_under_once_each_listed_point_kills_one_process_and_the_next_tries_go_past_it(tmp_path):
    once = tmp_path / "faults"
    tries = [_run("verify,bronze:2,silver", once) for _ in range(3)]
    assert [t.returncode for t in tries] == [-signal.SIGKILL, -signal.SIGKILL, 0]
    assert [t.stdout.split() for t in tries] == [["bronze"], ["bronze", "bronze"], ["bronze", "bronze", "silver"]]
    assert fired(once) == ["bronze:2", "silver"]  # `verify` never passed: never fired


def test_a_point_listed_twice_counts_each_passage_once(tmp_path):
    """`bronze:1,bronze:2` under once: the first try dies at its first passage, the next at its
    second (each passage counted once, not once per listing), the third goes through."""
    once = tmp_path / "faults"
    tries = [_run("bronze:1,bronze:2", once) for _ in range(3)]
    assert [t.stdout.split() for t in tries] == [[], ["bronze"], ["bronze", "bronze", "silver"]]
    assert fired(once) == ["bronze:1", "bronze:2"]
