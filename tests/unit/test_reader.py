"""The file reader, verifier and field splitter: plain Python, no Spark."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from crm_pipeline.ingest.reader import count_data_lines, iter_records, verify_file


def _write(path, data: bytes):
    path.write_bytes(data)
    return path, len(data), hashlib.md5(data).hexdigest()


def test_verify_accepts_a_file_matching_its_control_line(tmp_path):
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat", b"a|1\n\nb|2\n")
    check = verify_file(p, p.name, 2, size, md5, gzipped=False)
    assert check.check is None and check.rows == 2


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda size, md5: (size + 1, md5), "byte_size"),
        (lambda size, md5: (size, "0" * 32), "md5"),
    ],
)
def test_verify_names_the_failed_check(tmp_path, mutate, expected):
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat", b"a|1\n")
    size, md5 = mutate(size, md5)
    check = verify_file(p, p.name, 1, size, md5, gzipped=False)
    assert check.check == expected and p.name in check.detail


def test_verify_reports_a_listed_but_missing_file(tmp_path):
    check = verify_file(tmp_path / "gone.dat", "gone.dat", 1, 10, "0" * 32, gzipped=False)
    assert check.check == "file_missing"


def test_verify_counts_rows_without_blank_lines(tmp_path):
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat", b"a\n\n  \nb\n")
    assert verify_file(p, p.name, 3, size, md5, gzipped=False).check == "row_count"
    assert verify_file(p, p.name, 2, size, md5, gzipped=False).check is None


def test_verify_detects_a_truncated_gzip_even_when_md5_matches(tmp_path):
    full = gzip.compress(b"".join(b"record|%d\n" % i for i in range(5000)), mtime=0)
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat.gz", full[: len(full) // 2])
    check = verify_file(p, p.name, 5000, size, md5, gzipped=True)
    assert check.check == "gzip_integrity"


def test_records_are_numbered_by_physical_line_and_crlf_is_stripped(tmp_path):
    p = tmp_path / "f.dat"
    p.write_bytes(b"a|1\r\n\r\nb|2\r\nc|3")
    assert list(iter_records(p, "utf-8", False)) == [(1, "a|1", True), (3, "b|2", True), (4, "c|3", True)]


def test_gbk_lines_decode_to_chinese(tmp_path):
    p = tmp_path / "f.dat"
    p.write_bytes("S1|王伟\n".encode("gbk"))
    assert list(iter_records(p, "gbk", False)) == [(1, "S1|王伟", True)]


NAMES = ["王伟", "李娜", "张敏", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴昊"]


def test_a_utf8_file_declared_gbk_fails_its_encoding_check(tmp_path):
    text = "".join(f"S{i}|{name}\n" for i, name in enumerate(NAMES)).encode("utf-8")
    p, size, md5 = _write(tmp_path / "SUBSCRIBER_20260301_001.dat", text)
    check = verify_file(p, p.name, len(NAMES), size, md5, gzipped=False, codec="gbk")
    assert check.check == "encoding" and "declared GBK" in check.detail and p.name in check.detail
    assert verify_file(p, p.name, len(NAMES), size, md5, gzipped=False).check is None  # declared UTF-8


def test_genuine_gbk_and_short_ambiguous_runs_load_as_declared(tmp_path):
    gbk = "".join(f"S{i}|{name}\n" for i, name in enumerate(NAMES)).encode("gbk")
    p, size, md5 = _write(tmp_path / "a.dat", gbk)
    assert verify_file(p, p.name, len(NAMES), size, md5, gzipped=False, codec="gbk").check is None
    # one GBK character whose two bytes also happen to be UTF-8: too little to overrule the label
    short = "S1|模\nS2|Wang\n".encode("gbk")
    assert short.decode("utf-8")
    p, size, md5 = _write(tmp_path / "b.dat", short)
    assert verify_file(p, p.name, 2, size, md5, gzipped=False, codec="gbk").check is None
    assert [t for _, t, _ in iter_records(p, "gbk", False)] == ["S1|模", "S2|Wang"]


def test_an_undecodable_line_is_flagged_and_its_neighbours_still_decode(tmp_path):
    p = tmp_path / "f.dat"
    p.write_bytes("ok|王\n".encode() + b"bad|\xff\xfe\n" + "ok2|伟\n".encode())
    got = list(iter_records(p, "utf-8", False))
    assert [(n, ok) for n, _, ok in got] == [(1, True), (2, False), (3, True)]
    assert got[0][1] == "ok|王" and got[2][1] == "ok2|伟"


def test_lines_split_across_read_chunks_keep_their_numbers(tmp_path):
    lines = [f"row|{i}|{'x' * (i % 17)}" for i in range(1, 2001)]
    p = tmp_path / "f.dat.gz"
    p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    got = list(iter_records(p, "utf-8", True, chunk_bytes=1000))
    assert [t for _, t, _ in got] == lines and [n for n, _, _ in got] == list(range(1, 2001))
    assert count_data_lines(p, True) == 2000


def test_blank_lines_are_what_bytes_strip_removes_across_tiny_chunks(tmp_path):
    p = tmp_path / "f.dat.gz"
    body = "a|1\r\n\r\n \t\nb|王\r\n".encode() + b"bad|\xff\n" + "c|3\n\u3000\n".encode()
    p.write_bytes(gzip.compress(body, mtime=0))
    got = list(iter_records(p, "utf-8", True, chunk_bytes=7))
    assert got == [(1, "a|1", True), (4, "b|王", True), (5, "bad|\\xff", False), (6, "c|3", True), (7, "\u3000", True)]
    assert count_data_lines(p, True) == 5  # a line of U+3000 is data, as the control file counts it


def test_a_multi_member_gzip_reads_whole_and_verifies(tmp_path):
    body = gzip.compress(b"a|1\nb|2\n", mtime=0) + gzip.compress(b"c|3\n", mtime=0)
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat.gz", body)
    assert [t for _, t, _ in iter_records(p, "utf-8", True)] == ["a|1", "b|2", "c|3"]
    assert verify_file(p, p.name, 3, size, md5, gzipped=True).check is None


def test_a_truncated_gzip_with_a_wrong_md5_reports_the_md5_first(tmp_path):
    full = gzip.compress(b"".join(b"record|%d\n" % i for i in range(5000)), mtime=0)
    p, size, _ = _write(tmp_path / "A_20260301_001.dat.gz", full[: len(full) // 2])
    assert verify_file(p, p.name, 5000, size, "0" * 32, gzipped=True).check == "md5"


def test_a_scan_yields_the_lines_and_then_knows_the_check(tmp_path):
    from crm_pipeline.ingest.reader import FileScan

    p, size, md5 = _write(tmp_path / "A_20260301_001.dat", b"a|1\nb|2\n")
    scan = FileScan(str(p), p.name, 3, size, md5, "utf-8", False)
    assert scan.check is None
    lines = [t for _, texts, _ in scan.batches() for t in texts.to_pylist()]
    assert lines == ["a|1", "b|2"] and scan.check.check == "row_count"


def test_files_are_read_through_file_uris(tmp_path):
    p, size, md5 = _write(tmp_path / "A_20260301_001.dat", b"a|1\n")
    assert verify_file(f"file://{p}", p.name, 1, size, md5, gzipped=False).check is None


def test_a_failed_check_is_recovered_from_the_spark_error_text():
    from crm_pipeline.ingest.spark_io import CHECK_FAILED, failed_check

    text = ('py4j error ... DeliveryCheckFailed: ' + CHECK_FAILED +
            '{"delivery_id": "cdr_voice/20260301/ab", "file": "F_001.dat", "check": "md5", "detail": "x} y"}\n  at ...')
    assert failed_check(RuntimeError(text)) == {"delivery_id": "cdr_voice/20260301/ab", "file": "F_001.dat",
                                                "check": "md5", "detail": "x} y"}
    assert failed_check(RuntimeError("OutOfMemoryError")) is None


def test_split_fields_in_arrow_names_structural_rejects():
    import pyarrow as pa

    from crm_pipeline.feeds import feed_spec
    from crm_pipeline.transforms.staging.parse import split_fields

    spec = feed_spec("cdr_sms")
    good = "S1|13800000001|13900000002|MO|20260301100000|P2P|CMCC|10"
    cols = split_fields(pa.array([good, "a|b", good.replace("|P2P|", "||")]), pa.array([True, True, False]), spec)
    fields, (raw, reason, detail) = cols[: spec.n_fields], cols[spec.n_fields:]
    assert [c[0].as_py() for c in fields] == good.split("|")
    assert [c[1].as_py() for c in fields] == [None] * spec.n_fields
    assert reason.to_pylist() == [None, "field_count", "bad_encoding"]
    assert detail.to_pylist()[1] == f"expected {spec.n_fields} fields, found 2"
    assert raw.to_pylist() == [None, "a|b", good.replace("|P2P|", "||")]
