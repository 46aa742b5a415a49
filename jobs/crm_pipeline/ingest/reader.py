"""Read delivered data files: verification against the control file, then numbered, decoded lines.

Both run inside Spark tasks, one file per call, so a cluster spreads files over executors:
gzip is not splittable, and exact line numbers need one reader per file anyway. The reader
streams fixed-size chunks, splits on b"\\n" *before* decoding (0x0A never occurs inside a GBK
or UTF-8 multi-byte sequence), decodes a whole chunk at C speed and falls back to line-by-line
decoding only for a chunk that holds an undecodable line.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one data file against its control line. `check` is None when it passed."""

    file_name: str
    check: str | None
    detail: str
    rows: int


def _open(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _raw_chunks(path: Path, gzipped: bool, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with _open(path, gzipped) as fh:
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                return
            yield block


def _line_chunks(path: Path, gzipped: bool, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[bytes]]:
    """Lists of complete physical lines (without the b"\\n"), in file order."""
    tail = b""
    for block in _raw_chunks(path, gzipped, chunk_bytes):
        block = tail + block
        cut = block.rfind(b"\n")
        if cut < 0:
            tail = block
            continue
        tail = block[cut + 1 :]
        yield block[:cut].split(b"\n")
    if tail:
        yield [tail]


def count_data_lines(path: Path, gzipped: bool) -> int:
    """Data lines as the control file counts them: non-blank physical lines."""
    return sum(1 for lines in _line_chunks(path, gzipped) for line in lines if line.strip())


def verify_file(path: Path, file_name: str, row_count: int, byte_size: int, md5: str, gzipped: bool) -> FileCheck:
    """Check existence, size, md5, gzip integrity and row count, in that order."""
    if not path.is_file():
        return FileCheck(file_name, "file_missing", f"{path} is listed in the control file but missing", 0)
    size = path.stat().st_size
    if size != byte_size:
        return FileCheck(file_name, "byte_size", f"{path}: size {size} bytes, control file says {byte_size}", 0)
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    if digest.hexdigest() != md5:
        return FileCheck(file_name, "md5", f"{path}: md5 {digest.hexdigest()}, control file says {md5}", 0)
    try:
        rows = count_data_lines(path, gzipped)
    except (EOFError, OSError, zlib.error) as exc:
        return FileCheck(file_name, "gzip_integrity", f"{path}: not a complete gzip stream ({exc})", 0)
    if rows != row_count:
        return FileCheck(file_name, "row_count", f"{path}: {rows} data lines, control file says {row_count}", rows)
    return FileCheck(file_name, None, "ok", rows)


_BLANK = " \t\r\n\x0b\x0c"  # what bytes.strip() removes: the control file's notion of a blank line


def iter_record_batches(
    path: Path, codec: str, gzipped: bool, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[pa.Array, pa.Array, pa.Array]]:
    """Numbered non-blank lines, one Arrow batch (line numbers, texts, decoded cleanly) per chunk.

    The clean path is vectorised: one decode and one split per chunk in C, blank-line filtering
    and `\r` stripping in Arrow compute; only a chunk with an undecodable line goes line by line.
    """
    line_no = 0
    for lines in _line_chunks(path, gzipped, chunk_bytes):
        n = len(lines)
        try:
            texts = pa.array(b"\n".join(lines).decode(codec).split("\n"), pa.string())
            oks = None
        except UnicodeDecodeError:
            decoded = []
            ok_list = []
            for raw in lines:
                try:
                    decoded.append(raw.decode(codec))
                    ok_list.append(True)
                except UnicodeDecodeError:
                    decoded.append(raw.decode(codec, errors="backslashreplace"))
                    ok_list.append(False)
            texts, oks = pa.array(decoded, pa.string()), pa.array(ok_list, pa.bool_())
        numbers = pa.array(np.arange(line_no + 1, line_no + n + 1, dtype=np.int64))
        line_no += n
        keep = pc.not_equal(pc.utf8_trim(texts, characters=_BLANK), "")
        texts = pc.utf8_rtrim(pc.filter(texts, keep), characters="\r")
        oks = pc.filter(oks, keep) if oks is not None else pa.array(np.ones(len(texts), dtype=bool))
        yield pc.filter(numbers, keep), texts, oks


def iter_records(path: Path, codec: str, gzipped: bool, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number, text, decoded cleanly) for every non-blank line; `\r\n` is accepted.

    Line numbers count physical lines from 1, blank ones included, so they point into the file.
    An undecodable line is returned with backslash escapes and `False`: it will be quarantined.
    """
    for numbers, texts, oks in iter_record_batches(path, codec, gzipped, chunk_bytes):
        yield from zip(numbers.to_pylist(), texts.to_pylist(), oks.to_pylist())
