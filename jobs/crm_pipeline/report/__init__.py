"""The monthly CRM report: one self-contained HTML file drawn from the lake's gold and ops tables.

`crm report --lake DIR [--month YYYY-MM] [--out FILE.html]` writes it; `crm demo` writes the
report of the latest analysed month. `data` reads the tables (delta-rs, no Spark), `sections`
turns them into titled sections with Plotly charts and tables, `html` lays them out in one page
with Plotly's script inlined, so the file opens offline. Every section has a stable element id
(`SECTION_IDS`) that links, tests and bookmarks rely on.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path

from crm_pipeline.settings import LakeLayout

log = logging.getLogger(__name__)


def write_report(lake: LakeLayout, out: Path | None, month: date | None = None) -> tuple[Path, date]:
    """Write the report of `month` (default: the latest analysed month) to `out` (default
    `crm-report-YYYY-MM.html` in the current directory); return the path and the month reported."""
    from crm_pipeline.report import data, html, sections

    clock = time.monotonic()
    frames = data.load(lake, month)
    log.info("read the lake in %.1f s: %s", time.monotonic() - clock, ", ".join(
        f"{name} {len(frame):,} rows" for name, frame in vars(frames).items() if hasattr(frame, "columns")))
    out = out or Path(f"crm-report-{frames.month:%Y-%m}.html")
    built = []
    for build in sections.BUILDERS:
        clock = time.monotonic()
        built.append(build(frames))
        log.info("section %s in %.2f s", built[-1].id, time.monotonic() - clock)
    page = html.render(frames, built, lake.root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out, frames.month
