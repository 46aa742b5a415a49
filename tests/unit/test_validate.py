"""The vectorised typing and validation (Arrow, inside Spark tasks) against the same rules stated as
Spark column expressions (`spark_typing`), on every feed, field by field, with valid and broken
values of every kind the input contract names."""

from __future__ import annotations

from datetime import date

import pytest

from crm_pipeline.feeds import FeedSpec, load_feeds
from crm_pipeline.transforms.staging.parse import split_raw_lines, type_and_validate
from tests.unit import spark_typing

pytestmark = pytest.mark.spark

D = date(2026, 3, 5)
LINES = "business_date date, delivery_id string, source_file string, line_no long, raw_line string, decode_ok boolean"

#: values tried in every field: empty, malformed, out of range, edge instants, prefixes, codes
CANDIDATES = [
    "", "x", "-1", "0", "5", "007", "-0", "+5", " 5", "1.5", "6O", "2147483647", "2147483648", "-2147483649",
    "999999999999999999", "1000000000000000000", "20260305100000", "20260230100000", "20240229120000",
    "20230229120000", "20260305240000", "20260305235960", "20260302000000", "20260301235959", "20260305235959",
    "20260306000000", "19991231235959", "00010101000000", "2026030510000", "20260305", "20260306", "20260302",
    "20260301", "20260229", "20240229", "202603", "202604", "202613", "202600", "13800000001", "+8613800000001",
    "8613800000001", "868613800000001", "1380000000", "138000000012", "１３８００００００01", "Y", "1", "2",
    "2G", "5G", "MO", "MT", "ON_NET", "HOTLINE", "PREPAID", "ACTIVE", "TERMINATED", "中文", "abcdefgh",
]


def _valid_value(f) -> str:
    if f.allowed:
        return f.allowed[0]
    if f.type in ("int", "long"):
        return str(max(f.min if f.min is not None else 5, 5) if f.max is None or f.max >= 5 else f.max)
    return {"msisdn": "13800000001", "phone": "02584001234", "timestamp": "20260305100000", "date": "20260305",
            "month": "202603", "flag": "1"}.get(f.type, "X1")


def _lines(spec: FeedSpec) -> list[str]:
    base = [_valid_value(f) for f in spec.fields]
    if spec.feed == "subscriber":  # birth years live in 1900..2100
        base[spec.field_names.index("birth_year")] = "1980"
    out = ["|".join(base)]
    for i, f in enumerate(spec.fields):
        for value in CANDIDATES + list(f.allowed or ()):
            line = list(base)
            line[i] = value
            out.append("|".join(line))
    # two defects in one record: the first field's wins
    first, last = list(base), list(base)
    first[0], first[-1] = "", "x"
    last[1], last[-1] = "x", ""
    return out + ["|".join(first), "|".join(last)]


def _verdict(row) -> tuple:
    return row.line_no, row.raw_line, row.reject_reason, row.reject_detail


@pytest.mark.parametrize("feed", list(load_feeds()))
def test_arrow_typing_equals_the_column_expression_rules(spark, feed):
    spec = load_feeds()[feed]
    lines = spark.createDataFrame([(D, "d1", "f.dat", i, line, True) for i, line in enumerate(_lines(spec), 1)],
                                  LINES)
    split = split_raw_lines(lines, spec).where("reject_reason IS NULL").cache()
    got = type_and_validate(split, spec)
    expected = spark_typing.type_and_validate(split, spec)
    assert got.schema.simpleString() == expected.schema.simpleString()
    got_rows, expected_rows = got.orderBy("line_no").collect(), expected.orderBy("line_no").collect()
    assert len(got_rows) == len(expected_rows) > len(CANDIDATES)
    # a rejected record's typed values go nowhere (the quarantine keeps its line): compare them on
    # valid records only
    mismatches = [(e.raw_line, e, g) for e, g in zip(expected_rows, got_rows)
                  if (e if e.reject_reason is None else _verdict(e)) != (g if g.reject_reason is None else _verdict(g))]
    assert not mismatches, mismatches[:3]
    reasons = {r.reject_reason for r in got_rows}
    assert None in reasons and len(reasons) >= 3  # the cases reach valid records and several reasons


def test_a_feed_schema_bounding_a_non_numeric_field_is_refused(tmp_path):
    import json

    from crm_pipeline.feeds import _load

    spec = dict(feed="x", kind="event", cadence="daily", key=["id"], event_time="t",
                fields=[dict(name="id", type="string", nullable=False),
                        dict(name="t", type="timestamp", nullable=False, min=0)])
    path = tmp_path / "x.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="min, max and warn_above apply to int and long fields only, not to t"):
        _load(path)
