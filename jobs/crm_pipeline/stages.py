"""Wall time per pipeline stage: read+bronze, bronze_checks, silver, silver_checks, silver_write,
quarantine (per feed) of the daily stage; contact_pairs, subscriber_month, clv, churn_features, churn_scoring,
migration, marts, validate, gold_write (per table) of the monthly stage; publish (per table).

Stages nest nowhere: each `stage(...)` block is one Spark action or a short run of them, so the
times add up to the run. They feed the progress lines (`--verbose`) and the benchmark harness,
which sets `CRM_STAGE_EVENTS` to a file and gets one JSON line per stage (name, feed, wall-clock
start and end in epoch seconds, rows) to attribute memory samples and rows/s to stages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: stage name -> seconds spent in this process (all feeds together)
totals: dict[str, float] = defaultdict(float)


@contextmanager
def stage(name: str, feed: str | None = None) -> Iterator[dict]:
    """Time a block; the yielded dict may receive `rows` (records the stage handled)."""
    from crm_pipeline.progress import label

    info: dict = {}
    start = time.time()
    label(f"{feed}: {name}" if feed else name)
    try:
        yield info
    finally:
        end = time.time()
        totals[name] += end - start
        log.info("stage %s%s: %.2f s", name, f" ({feed})" if feed else "", end - start)
        path = os.environ.get("CRM_STAGE_EVENTS")
        if path:
            event = dict(stage=name, feed=feed, start=start, end=end, rows=info.get("rows"))
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
