"""Progress bars for the long steps (generation, ingest, the monthly marts, publish), on a terminal
only: when stderr is not a terminal (Airflow task logs, cron, a pipe) they draw nothing, and the
command's progress lines are all the output there is. `CRM_PROGRESS=never|always` overrides the
terminal check (`auto`, the default).

A bar shows how far the step is (days generated, deliveries loaded, marts built, tables
published) and, as its postfix, the stage running now (`crm_pipeline.stages`). Lines printed
while a bar is drawn go through `say`, which clears the bar, prints, and draws it again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: the bars drawn now, innermost last (stages label the innermost)
_open: list = []


def interactive() -> bool:
    """Whether bars are drawn: CRM_PROGRESS, else whether stderr is a terminal."""
    setting = os.environ.get("CRM_PROGRESS", "auto").strip().lower()
    if setting in ("never", "0", "no", "off"):
        return False
    if setting in ("always", "1", "yes", "on"):
        return True
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


@contextmanager
def bar(total: int, desc: str, unit: str) -> Iterator[object]:
    """A bar of `total` `unit`s (a disabled one off a terminal: every call on it does nothing)."""
    from tqdm import tqdm

    b = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, disable=not interactive(), leave=False,
             dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit} "
                                            "[{elapsed}<{remaining}] {postfix}")
    _open.append(b)
    try:
        yield b
    finally:
        _open.remove(b)
        b.close()


def track(items, desc: str, unit: str) -> Iterator:
    """Yield `items`, one bar step each."""
    items = list(items)
    with bar(len(items), desc, unit) as b:
        for item in items:
            yield item
            b.update(1)


def label(text: str) -> None:
    """Show `text` (the stage running now) on the innermost bar."""
    if _open:
        _open[-1].set_postfix_str(text, refresh=True)


def say(line: str, file=None) -> None:
    """Print a line without breaking the bars drawn below it."""
    from tqdm import tqdm

    tqdm.write(line, file=file or sys.stdout)
    (file or sys.stdout).flush()
