"""Read delivered data files in one pass: verification against the control line and numbered lines.

A file is read once: the raw bytes feed the md5 as they stream in, gzip members are inflated
by zlib, lines are cut on b"\\n" *before* decoding (0x0A never occurs inside a GBK or UTF-8
multi-byte sequence), a whole chunk is decoded or validated in one C call and lands in an Arrow
string array without a Python object per line. Only a chunk that holds an undecodable line goes
line by line, to flag that line (`bad_encoding`) and keep its neighbours. The control line's
checks (size, md5, gzip integrity, row count, a UTF-8 file declared GBK) are known when the file
ends; whoever consumes the lines must not publish them before then (`FileScan.check`).

Files are opened through `pyarrow.fs`, so the landing zone may be a local path, `file://`,
`s3://` / `s3a://` or `hdfs://` (libhdfs) location: executors need no shared POSIX mount.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import fs as pafs

from crm_pipeline import faults

CHUNK_BYTES = 16 * 1024 * 1024
#: A file declared GBK whose text is valid UTF-8 throughout, with at least this many multi-byte
#: characters, is a UTF-8 file under the wrong label. Chinese text in GBK passes for UTF-8 only by
#: chance, in runs of a character or two: a short run proves nothing and loads as declared.
UTF8_EVIDENCE = 8

_BLANK = " \t\r\n\x0b\x0c"  # what bytes.strip() removes: the control file's notion of a blank line
_BLANK_BYTE = np.zeros(256, dtype=bool)
_BLANK_BYTE[[ord(c) for c in _BLANK]] = True


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one data file against its control line. `check` is None when it passed."""

    file_name: str
    check: str | None
    detail: str
    rows: int


# --- file systems -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _filesystem(scheme_and_authority: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(scheme_and_authority + "/")[0]


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The file system and path of a local path or a `file://`, `s3://`, `s3a://`, `hdfs://` URI."""
    location = str(location)
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location)
    scheme, rest = location.split("://", 1)
    if scheme in ("s3a", "s3n"):  # Hadoop's names for S3; pyarrow speaks s3://
        scheme = "s3"
    if scheme == "file":
        return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    authority, _, path = rest.partition("/")
    filesystem = _filesystem(f"{scheme}://{authority}")
    return filesystem, (f"{authority}/{path}" if scheme in ("s3", "gs") else "/" + path)


def join(location: str, *parts: str) -> str:
    """`location/part/...` for a local path or a URI."""
    return "/".join([str(location).rstrip("/"), *parts])


# --- raw bytes -> lines ------------------------------------------------------------------------


class _Source:
    """The raw bytes of a file in chunks, feeding the md5 as they pass."""

    def __init__(self, stream, chunk_bytes: int):
        self.stream, self.chunk_bytes = stream, chunk_bytes
        self.md5 = hashlib.md5()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.stream.read(self.chunk_bytes)
            if not block:
                return
            self.md5.update(block)
            yield block

    def drain(self) -> None:
        """Hash the rest of the file (after a decompression error) so the md5 check still runs."""
        for _ in self:
            pass


def _inflate(raw: Iterator[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Decompressed bytes of a (possibly multi-member) gzip stream; raise EOFError if truncated."""
    d = zlib.decompressobj(wbits=31)
    seen = False
    for data in raw:
        seen = True
        while data:
            out = d.decompress(data, chunk_bytes)
            if out:
                yield out
            data = d.unconsumed_tail
            if d.eof:
                data = d.unused_data + data
                if not data:
                    break
                d = zlib.decompressobj(wbits=31)  # the next gzip member
    if seen and not d.eof:
        while not d.eof:  # flush what the last member still holds; an incomplete stream stays open
            out = d.decompress(b"", chunk_bytes)
            if not out:
                break
            yield out
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _blocks_of_lines(data: Iterator[bytes]) -> Iterator[bytes]:
    """Blocks of whole physical lines, each ending in b"\\n" (a last line without one gets one)."""
    tail = b""
    for piece in data:
        block = tail + piece if tail else piece
        cut = block.rfind(b"\n")
        if cut < 0:
            tail = block
            continue
        tail = block[cut + 1 :]
        yield block[: cut + 1]
    if tail:
        yield tail + b"\n"


def _line_layout(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start offsets, end offsets excluding b"\\n") of the lines of a block."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    starts = np.empty_like(ends)
    starts[0:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def _non_blank(block: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which lines hold data (bytes.strip() leaves something): only lines starting with a blank
    byte (empty lines, indentation) are looked at one by one."""
    keep = np.ones(len(starts), dtype=bool)
    arr = np.frombuffer(block, dtype=np.uint8)
    for i in np.flatnonzero(_BLANK_BYTE[arr[starts]]):
        keep[i] = bool(block[starts[i] : ends[i]].strip())
    return keep


def _strings(utf8: bytes, n: int, validate: bool) -> pa.Array:
    """Arrow strings of the n lines of a UTF-8 block (each ending in b"\\n"), terminators removed.

    With `validate`, raise pa.ArrowInvalid if the block is not valid UTF-8.
    """
    starts, _ = _line_layout(utf8)
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[:n] = starts
    offsets[n] = len(utf8)
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(utf8))
    if validate:
        arr.validate(full=True)
    return pc.utf8_rtrim(arr, characters="\r\n").cast(pa.string())


def _decode_block(block: bytes, codec: str, n: int) -> tuple[pa.Array, pa.Array | None]:
    """Texts of the block's lines and, only when some line is undecodable, per-line decode flags."""
    try:
        if codec == "utf-8":
            return _strings(block, n, validate=True), None
        return _strings(block.decode(codec).encode("utf-8"), n, validate=False), None
    except (UnicodeDecodeError, pa.ArrowInvalid):
        pass
    decoded, oks = [], []
    for raw in block[:-1].split(b"\n"):
        try:
            decoded.append(raw.decode(codec).rstrip("\r"))
            oks.append(True)
        except UnicodeDecodeError:
            decoded.append(raw.decode(codec, errors="backslashreplace").rstrip("\r"))
            oks.append(False)
    return pa.array(decoded, pa.string()), pa.array(oks, pa.bool_())


def _utf8_characters(block: bytes, so_far: int) -> int | None:
    """`so_far` plus the multi-byte UTF-8 characters of a line-aligned block; None if the block
    is not valid UTF-8."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return so_far + int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) >= 0xC0))


class FileScan:
    """One pass over one delivered file: numbered non-blank lines, then the control-line checks.

    Iterate `batches()` (Arrow arrays: line numbers, texts, decoded cleanly) to the end; `check`
    then holds the outcome. With `decode=False` only the checks run (nothing is yielded).
    Line numbers count physical lines from 1, blank ones included, so they point into the file.
    """

    def __init__(self, location: str, file_name: str, row_count: int, byte_size: int, md5: str,
                 codec: str, gzipped: bool, chunk_bytes: int = CHUNK_BYTES):
        self.location, self.file_name = str(location), file_name
        self.row_count, self.byte_size, self.md5 = row_count, byte_size, md5
        self.codec, self.gzipped, self.chunk_bytes = codec, gzipped, chunk_bytes
        self.check: FileCheck | None = None
        self.rows = 0  # non-blank lines read
        self.broken: Exception | None = None  # why decompression stopped early, if it did

    def _fail(self, check: str, detail: str, rows: int = 0) -> None:
        self.check = FileCheck(self.file_name, check, f"{self.location}: {detail}", rows)

    def batches(self, decode: bool = True) -> Iterator[tuple[pa.Array, pa.Array, pa.Array]]:
        filesystem, path = resolve(self.location)
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            self.check = FileCheck(self.file_name, "file_missing",
                                   f"{self.location} is listed in the control file but missing", 0)
            return
        if info.size != self.byte_size:
            self._fail("byte_size", f"size {info.size} bytes, control file says {self.byte_size}")
            return
        line_no = rows = 0
        broken: Exception | None = None
        utf8_chars: int | None = 0 if self.codec == "gbk" else None  # None: not UTF-8, or not asked
        with filesystem.open_input_stream(path, compression=None) as stream:
            faults.point("verify")  # once per file, an empty one too
            source = _Source(stream, self.chunk_bytes)
            data = _inflate(iter(source), self.chunk_bytes) if self.gzipped else iter(source)
            try:
                for block in _blocks_of_lines(data):
                    starts, ends = _line_layout(block)
                    n = len(ends)
                    keep = _non_blank(block, starts, ends)
                    kept = int(keep.sum())
                    rows += kept
                    if utf8_chars is not None and not block.isascii():
                        utf8_chars = _utf8_characters(block, utf8_chars)
                    if decode and kept:
                        texts, oks = _decode_block(block, self.codec, n)
                        numbers = np.arange(line_no + 1, line_no + n + 1, dtype=np.int64)
                        mask = pa.array(keep)
                        texts = texts if kept == n else pc.filter(texts, mask)
                        if oks is None:
                            oks = pa.array(np.ones(kept, dtype=bool))
                        elif kept != n:
                            oks = pc.filter(oks, mask)
                        yield pa.array(numbers[keep]), texts, oks
                    line_no += n
            except (EOFError, OSError, zlib.error) as exc:
                broken = exc
                source.drain()
        self.rows, self.broken = rows, broken
        digest = source.md5.hexdigest()
        if digest != self.md5:
            self._fail("md5", f"md5 {digest}, control file says {self.md5}")
        elif broken is not None:
            self._fail("gzip_integrity", f"not a complete gzip stream ({broken})")
        elif rows != self.row_count:
            self._fail("row_count", f"{rows} data lines, control file says {self.row_count}", rows)
        elif utf8_chars is not None and utf8_chars >= UTF8_EVIDENCE:
            self._fail("encoding", f"declared GBK, but the file is valid UTF-8 throughout ({utf8_chars} multi-byte "
                                   "characters): the control file names the wrong encoding", rows)
        else:
            self.check = FileCheck(self.file_name, None, "ok", rows)


def verify_file(path: str | Path, file_name: str, row_count: int, byte_size: int, md5: str,
                gzipped: bool, codec: str = "utf-8") -> FileCheck:
    """Check existence, size, md5, gzip integrity, row count and a UTF-8 file declared GBK, in that
    order (no decoding)."""
    scan = FileScan(str(path), file_name, row_count, byte_size, md5, codec, gzipped)
    for _ in scan.batches(decode=False):
        pass
    return scan.check


def count_data_lines(path: str | Path, gzipped: bool) -> int:
    """Data lines as the control file counts them: non-blank physical lines."""
    scan = FileScan(str(path), Path(path).name, -1, Path(path).stat().st_size, "", "utf-8", gzipped)
    for _ in scan.batches(decode=False):
        pass
    if scan.broken is not None:
        raise EOFError(str(scan.broken))
    return scan.rows


def iter_record_batches(
    path: str | Path, codec: str, gzipped: bool, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[pa.Array, pa.Array, pa.Array]]:
    """Numbered non-blank lines of a file, unverified: (line numbers, texts, decoded cleanly)."""
    filesystem, location = resolve(str(path))
    size = filesystem.get_file_info(location).size
    yield from FileScan(str(path), Path(path).name, -1, size, "", codec, gzipped, chunk_bytes).batches()


def iter_records(path: str | Path, codec: str, gzipped: bool,
                 chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number, text, decoded cleanly) for every non-blank line; `\\r\\n` is accepted.

    An undecodable line is returned with backslash escapes and `False`: it will be quarantined.
    """
    for numbers, texts, oks in iter_record_batches(path, codec, gzipped, chunk_bytes):
        yield from zip(numbers.to_pylist(), texts.to_pylist(), oks.to_pylist())
