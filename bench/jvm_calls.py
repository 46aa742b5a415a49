"""Calls from the Python driver into the JVM during one `crm` command, by the line that made them.

    .venv/bin/python bench/jvm_calls.py [--top 25] [--json FILE] -- demo --dir var/demo-calls

Every py4j command the driver sends (building a column, resolving a name, an action, releasing a
JVM object) is a round trip between two processes: 0.05-0.1 ms when the JVM is idle, more while
its lock is busy. A column built literal by literal over a few hundred values, or a helper called
once per column of a wide frame, makes thousands of them. The command runs in this process with
py4j's `send_command` wrapped: each call is charged to the innermost frame of `crm_pipeline` on
the stack (calls from py4j's own threads, which release JVM objects Python no longer holds, to
the thread's entry). Printed at exit: calls and seconds spent waiting per line, the most calls
first. The seconds include the actions' run time (a `collect` waits for its job), so they say
where the driver waits, the calls where it chatters.

Not a timing benchmark: the wrapper adds a few microseconds a call. docs/benchmarks.md
("calls into the JVM") has the figures of a demo before and after the literals were spelled in
SQL.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "crm_pipeline"


class Counter:
    """Calls and seconds per call site, filled by the wrapped `send_command`."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self.seconds: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    @staticmethod
    def site(frame) -> str:
        """The innermost frame of the package, else the outermost frame (a thread's entry)."""
        outer = None
        while frame is not None:
            path = frame.f_code.co_filename
            if f"/{PACKAGE}/" in path:
                return f"{path.split(f'/{PACKAGE}/', 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}"
            outer = frame
            frame = frame.f_back
        if outer is None:
            return "?"
        return f"(outside {PACKAGE}) {Path(outer.f_code.co_filename).name}:{outer.f_code.co_name}"

    def install(self) -> None:
        from py4j import clientserver

        original = clientserver.ClientServerConnection.send_command

        def send_command(connection, command, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(connection, command, *args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                key = self.site(sys._getframe(1))
                with self._lock:
                    self.calls[key] += 1
                    self.seconds[key] += elapsed

        clientserver.ClientServerConnection.send_command = send_command

    def report(self, top: int) -> str:
        with self._lock:
            total, waited = sum(self.calls.values()), sum(self.seconds.values())
            lines = [f"calls into the JVM: {total:,} ({waited:.1f} s waiting on them)",
                     f"{'calls':>9} {'seconds':>8}  line"]
            for key, n in self.calls.most_common(top):
                lines.append(f"{n:>9,} {self.seconds[key]:>8.2f}  {key}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        with self._lock:
            return {k: {"calls": n, "seconds": round(self.seconds[k], 4)} for k, n in self.calls.most_common()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25, help="call sites to print (most calls first)")
    parser.add_argument("--json", type=Path, help="also write every call site's counts to this file")
    args = parser.parse_args(ours)
    if not command:
        parser.error("give the crm command after --, e.g. -- demo --dir var/demo-calls")

    sys.path.insert(0, str(ROOT / "jobs"))
    counter = Counter()
    counter.install()

    def report() -> None:
        print(counter.report(args.top), file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(counter.as_json(), indent=1))

    atexit.register(report)  # also when the command exits through SystemExit
    from crm_pipeline.cli import main as crm

    return crm(command)


if __name__ == "__main__":
    sys.exit(main())
