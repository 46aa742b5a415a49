"""Control-file parsing and delivery discovery."""

from __future__ import annotations

from datetime import date

import pytest

from crm_pipeline.ingest.landing import ControlFileError, discover, parse_control_file
from tests.conftest import write_delivery

DAY = date(2026, 3, 1)


def test_control_lines_parse_into_entries(tmp_path):
    ctl = tmp_path / "CDR_VOICE_20260301.ctl"
    ctl.write_text("CDR_VOICE_20260301_001.dat.gz|10|123|" + "a" * 32 + "|UTF-8\nCDR_VOICE_20260301_002.dat|0|0|" + "b" * 32 + "|GBK\n")
    entries = parse_control_file(ctl, "cdr_voice", DAY)
    assert [(e.file_name, e.row_count, e.gzipped, e.python_codec) for e in entries] == [
        ("CDR_VOICE_20260301_001.dat.gz", 10, True, "utf-8"),
        ("CDR_VOICE_20260301_002.dat", 0, False, "gbk"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "CDR_VOICE_20260301_001.dat|10|123|" + "a" * 32,                 # 4 fields
        "CDR_VOICE_20260301_001.dat|ten|123|" + "a" * 32 + "|UTF-8",     # row count not a number
        "CDR_VOICE_20260301_001.dat|10|123|xyz|UTF-8",                  # md5 not hex
        "CDR_VOICE_20260301_001.dat|10|123|" + "a" * 32 + "|LATIN-1",   # unknown encoding
        "CDR_SMS_20260301_001.dat|10|123|" + "a" * 32 + "|UTF-8",       # another feed's file
    ],
)
def test_malformed_control_lines_fail_with_file_line_and_check(tmp_path, line):
    ctl = tmp_path / "CDR_VOICE_20260301.ctl"
    ctl.write_text(line + "\n")
    with pytest.raises(ControlFileError) as err:
        parse_control_file(ctl, "cdr_voice", DAY)
    assert f"{ctl}:1" in str(err.value) and "control_format" in str(err.value)


def test_a_file_listed_twice_fails_the_control_file(tmp_path):
    ctl = tmp_path / "CDR_VOICE_20260301.ctl"
    line = "CDR_VOICE_20260301_001.dat|1|4|" + "a" * 32 + "|UTF-8\n"
    ctl.write_text(line + line)
    with pytest.raises(ControlFileError, match="listed twice"):
        parse_control_file(ctl, "cdr_voice", DAY)


def test_discover_skips_days_without_a_control_file_and_other_folders(tmp_path):
    write_delivery(tmp_path, "ticket", DAY, [["x"]])
    write_delivery(tmp_path, "ticket", date(2026, 3, 2), [["y"]], control=False)
    (tmp_path / "_generator").mkdir()
    found = discover(tmp_path, ["ticket", "cdr_voice"])
    assert [(d.feed, d.business_date) for d in found] == [("ticket", DAY)]


def test_a_redelivery_gets_a_new_delivery_id_and_unlisted_files_are_reported(tmp_path):
    d = write_delivery(tmp_path, "ticket", DAY, [["x"]])
    first = discover(tmp_path, ["ticket"])[0]
    (d / "TICKET_20260301_009.dat").write_text("stray\n")
    write_delivery(tmp_path, "ticket", DAY, [["x"], ["z"]])
    (d / "TICKET_20260301_009.dat").write_text("stray\n")
    second = discover(tmp_path, ["ticket"])[0]
    assert first.delivery_id != second.delivery_id
    assert second.unlisted_files == ("TICKET_20260301_009.dat",)


def test_discover_honours_the_date_range(tmp_path):
    for day in (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)):
        write_delivery(tmp_path, "ticket", day, [["x"]])
    found = discover(tmp_path, ["ticket"], date(2026, 3, 2), date(2026, 3, 2))
    assert [d.business_date for d in found] == [date(2026, 3, 2)]

