"""`crm status` on the lake of a real `crm run` (the shared `published` run over generated data:
January to June complete, July delivered to the 4th without its bill), with one delivery taken
out of the delivery log so that a feed is late, judged at a fixed clock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from crm_pipeline import status
from crm_pipeline.feeds import load_feeds
from crm_pipeline.io import delta_rs
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import LAST_DAY, MONTHS

AS_OF = datetime(2026, 7, 5, 9, 0)  # July 4th's deliveries were due at 06:00 (config/operations.json)
LATE_DAY = LAST_DAY  # 2026-07-04, the last day delivered
LATE_FEED = "cdr_voice"


@pytest.fixture(scope="module")
def lake(published, tmp_path_factory):
    """The run's lake (its data layers linked, its ops tables copied) without the delivery log's
    entry of cdr_voice for July 4th: as if that delivery had not arrived."""
    from deltalake import write_deltalake

    src = Path(published["lake"].root)
    root = tmp_path_factory.mktemp("status") / "lake"
    root.mkdir()
    for layer in src.iterdir():
        if layer.name != "ops":
            (root / layer.name).symlink_to(layer)
    shutil.copytree(src / "ops", root / "ops")
    lake = LakeLayout(str(root))
    log = delta_rs.read(lake.ops("deliveries"))
    kept = log.filter(~((pc.field("feed") == LATE_FEED) & (pc.field("business_date") == LATE_DAY)))
    assert kept.num_rows == log.num_rows - 1
    write_deltalake(lake.ops("deliveries"), kept, mode="overwrite")
    return lake


def test_status_shows_the_late_feed_the_loaded_ones_and_their_records(lake):
    st = status.status(lake, AS_OF, days=7)
    by = {(d["feed"], d["business_date"]): d for d in st.deliveries}
    late = by[(LATE_FEED, LATE_DAY)]
    assert (late["status"], late["hours_late"]) == (status.LATE, 3.0)
    assert [(d["feed"], d["business_date"]) for d in st.late()] == [(LATE_FEED, LATE_DAY)]
    quarantine = delta_rs.read(lake.quarantine, ["delivery_id"])
    per_delivery = {}
    for d in quarantine.column("delivery_id").to_pylist():
        per_delivery[d] = per_delivery.get(d, 0) + 1
    loaded = [d for d in st.deliveries if d["status"] == status.LOADED and d["feed"] != "bill"]
    assert sum(1 for d in loaded if d["feed"] != "survey") == 7 * 7 - 1  # 7 daily feeds, 7 days, but one
    for d in loaded:  # the accounting agrees with the quarantine, delivery by delivery
        assert d["rows_quarantined"] == per_delivery.get(d["delivery_id"], 0), d
        assert d["rows_loaded"] > 0 or d["feed"] in ("ticket", "survey"), d
    assert sum(q["records"] for q in st.quarantine) == sum(d["rows_quarantined"] for d in loaded) > 0


def test_status_shows_the_months_published_and_the_one_waiting_for_its_bill(lake, published):
    months = {m["month"]: m for m in status.status(lake, AS_OF).months}
    assert [months[m]["status"] for m in sorted(months)] == ["PUBLISHED"] * len(MONTHS) + ["WAITING"]
    waiting = months[date(2026, 7, 1)]["waiting_for"]
    others = [s.feed for s in load_feeds().values() if s.is_daily and s.feed != LATE_FEED]
    assert waiting == (f"bill not delivered; 2026-07-05..2026-08-03 not loaded ({', '.join(others)}); "
                       f"2026-07-04..2026-08-03 not loaded ({LATE_FEED})")
    published_rows = published["second"]["subscriber_month"]
    assert months[MONTHS[-1]]["published_rows"] == int(
        (published_rows["month"].astype(str).str[:7] == f"{MONTHS[-1]:%Y-%m}").sum())


def test_crm_status_prints_it(lake):
    out = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "status", "--lake", lake.root,
                          "--as-of", AS_OF.isoformat(timespec="minutes")],
                         capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith(LATE_FEED))
    assert "6/7" in line and "LATE 2026-07-04 (3.0 h past 07-05 06:00)" in line
    assert "2026-07  WAITING" in out.stdout and "bill not delivered" in out.stdout
    assert "Quarantined records" in out.stdout and "Quarantined records: none" not in out.stdout
