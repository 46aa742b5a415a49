"""Property-based tests of the delivery reader and the record parser: arbitrary bytes, encodings,
line endings, compression and field mixes never raise, and every line is accounted for: loaded
as a record or flagged with one of the known reasons, numbered by its physical line."""

from __future__ import annotations

import gzip
import hashlib
from datetime import date

import pyarrow as pa
from hypothesis import HealthCheck, given, settings, strategies as st

from crm_pipeline.feeds import load_feeds
from crm_pipeline.ingest.reader import count_data_lines, iter_records, verify_file
from crm_pipeline.transforms.staging.parse import REASONS, split_fields
from crm_pipeline.transforms.staging.validate import LINEAGE, validate_batch
from tests.unit.test_validate import CANDIDATES, _valid_value

FEEDS = load_feeds()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: line bodies: raw bytes, or text in either contract encoding (GBK for what it can hold)
_texts = st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40)
_bodies = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
    _texts.map(lambda t: t.encode("utf-8")),
    _texts.map(lambda t: t.encode("gbk", errors="ignore")),
    st.sampled_from(["", " ", "\t", "\r", "王伟|13800000001", "a|b|c"]).map(str.encode),
)


@st.composite
def files(draw):
    lines = draw(st.lists(_bodies, max_size=25))
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    body = b"".join(line + end for line, end in zip(lines, endings))
    if lines and draw(st.booleans()):
        body = body[: -len(endings[-1])]  # the last line without its terminator
    return body


def _physical_lines(body: bytes) -> list[bytes]:
    lines = body.split(b"\n")
    return lines[:-1] if body.endswith(b"\n") else lines


@SETTINGS
@given(body=files(), codec=st.sampled_from(["utf-8", "gbk"]), gz=st.booleans(),
       chunk=st.sampled_from([1, 7, 64, 1 << 20]))
def test_any_bytes_read_without_raising_and_every_non_blank_line_comes_out_once(tmp_path_factory, body, codec, gz,
                                                                                chunk):
    path = tmp_path_factory.mktemp("fuzz") / ("f.dat.gz" if gz else "f.dat")
    data = gzip.compress(body, mtime=0) if gz else body
    path.write_bytes(data)

    records = list(iter_records(path, codec, gz, chunk_bytes=chunk))
    expected = [(i, line) for i, line in enumerate(_physical_lines(body), 1) if line.strip()]
    assert [n for n, _, _ in records] == [n for n, _ in expected]
    for (n, text, ok), (_, raw) in zip(records, expected):
        assert isinstance(text, str) and isinstance(ok, bool)
        try:
            decoded = raw.decode(codec)
        except UnicodeDecodeError:
            assert not ok, (n, raw)
        else:
            assert ok and text == decoded.rstrip("\r"), (n, raw, text)
    assert count_data_lines(path, gz) == len(expected)
    check = verify_file(path, path.name, len(expected), len(data), hashlib.md5(data).hexdigest(), gz, codec)
    assert check.check in (None, "encoding"), check  # a file that matches its control line passes
    assert check.check is None or codec == "gbk"


def _field_values(spec):
    valid = st.sampled_from([_valid_value(f) for f in spec.fields])
    return st.one_of(valid, st.sampled_from(CANDIDATES), _texts.map(lambda t: t.replace("|", "")))


@st.composite
def records(draw, spec):
    n_fields = draw(st.sampled_from([spec.n_fields] * 4 + [spec.n_fields - 1, spec.n_fields + 1, 1]))
    if draw(st.booleans()):  # mostly well-formed: each field valid for its own position
        fields = [_valid_value(f) for f in spec.fields][:n_fields]
        fields += [""] * (n_fields - len(fields))
        for i in draw(st.lists(st.integers(0, n_fields - 1), max_size=3)):
            fields[i] = draw(_field_values(spec))
    else:
        fields = draw(st.lists(_field_values(spec), min_size=n_fields, max_size=n_fields))
    return "|".join(fields)


@SETTINGS
@given(data=st.data(), feed=st.sampled_from(sorted(FEEDS)))
def test_any_field_mix_parses_to_a_record_or_one_known_reason(data, feed):
    spec = FEEDS[feed]
    lines = data.draw(st.lists(records(spec), min_size=1, max_size=30))
    decoded = data.draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
    n = len(lines)
    split = split_fields(pa.array(lines, pa.string()), pa.array(decoded, pa.bool_()), spec)
    fields, (_, reasons, _) = split[: spec.n_fields], split[spec.n_fields:]
    structural = reasons.to_pylist()
    for line, ok, reason in zip(lines, decoded, structural):
        expected = None if ok and line.count("|") + 1 == spec.n_fields else (
            "bad_encoding" if not ok else "field_count")
        assert reason == expected, (line, ok, reason)

    keep = [i for i, r in enumerate(structural) if r is None]
    lineage = [pa.array([date(2026, 3, 5)] * n, pa.date32()), pa.array(["d1"] * n), pa.array(["f.dat"] * n),
               pa.array(range(1, n + 1), pa.int64())]
    batch = pa.RecordBatch.from_arrays(lineage + list(fields), names=LINEAGE + spec.field_names).take(pa.array(keep, pa.int64()))
    typed = validate_batch(batch, spec)
    assert typed.num_rows == len(keep)
    for reason, detail in zip(typed.column("reject_reason").to_pylist(), typed.column("reject_detail").to_pylist()):
        assert reason is None or (reason in REASONS and detail), (reason, detail)
    assert typed.column("raw_line").to_pylist() == [lines[i] for i in keep]  # the quarantine keeps the line
    valid = [i for i, r in enumerate(typed.column("reject_reason").to_pylist()) if r is None]
    for f in spec.fields:
        if not f.nullable:
            assert None not in typed.column(f.name).take(pa.array(valid, pa.int64())).to_pylist(), f.name
