"""Landing-zone writer: data files (plain or gzip, UTF-8 or GBK, LF or CRLF) and control files."""

from __future__ import annotations

import gzip
import hashlib
import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .render import as_binary, terminated_bytes


@dataclass(frozen=True)
class DeliveryFormat:
    encoding: str  # "UTF-8" or "GBK"
    gzip: bool
    crlf: bool

    @property
    def terminator(self) -> bytes:
        return b"\r\n" if self.crlf else b"\n"


@dataclass(frozen=True)
class WrittenFile:
    name: str
    rows: int
    first_line: int  # position of the file's first line within the delivery (0-based)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no file name, mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=1) as gz:
        gz.write(data)
    return buf.getvalue()


def order_with_extras(n_main: int, n_extra: int, rng: np.random.Generator) -> np.ndarray:
    """Permutation placing ``n_extra`` extra lines at random positions among ``n_main`` lines
    that keep their relative order. Index i < n_main is a main line, else extra i - n_main."""
    positions = np.sort(rng.integers(0, n_main + 1, n_extra))
    return np.insert(np.arange(n_main, dtype=np.int64), positions,
                     np.arange(n_main, n_main + n_extra, dtype=np.int64))


class DeliveryWriter:
    """Writes deliveries; compression, hashing and file output run on a background thread so
    that they overlap with generating the next records (zlib and hashlib release the GIL)."""

    def __init__(self, landing: Path, max_rows: int):
        self.landing = landing
        self.max_rows = max_rows
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-writer")
        self._pending: list[Future] = []
        self._previous: list[Future] = []

    def write(self, feed: str, ymd: int, lines: pa.Array, fmt: DeliveryFormat,
              control: bool = True) -> list[WrittenFile]:
        """Queue one delivery of ``feed`` for business date ``ymd``; the control file goes last
        (not at all without ``control``: a delivery still being written).

        Lines are split into files of at most ``max_rows``; a delivery without lines is one empty
        ``.dat`` file listed with 0 rows. A previous delivery of the same feed and day is replaced.
        Returns the files (name, rows, first line) it will consist of.
        """
        n = len(lines)
        data, ends = terminated_bytes(as_binary(lines), fmt.terminator) if n else (b"", np.zeros(1, np.int64))
        bounds = list(range(0, n, self.max_rows)) + [n] if n else [0, 0]
        stem = f"{feed.upper()}_{ymd}"
        files: list[WrittenFile] = []
        chunks: list[bytes] = []
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            chunk = data[int(ends[a]): int(ends[b])]
            if fmt.encoding == "GBK" and chunk:
                chunk = chunk.decode("utf-8").encode("gbk")
            name = f"{stem}_{k + 1:03d}.dat" + (".gz" if fmt.gzip and chunk else "")
            files.append(WrittenFile(name, b - a, a))
            chunks.append(chunk)
        folder = self.landing / feed / str(ymd)
        self._pending.append(self._pool.submit(_write_files, folder, stem, files, chunks, fmt, control))
        return files

    def end_day(self) -> None:
        """Wait for the previous day's deliveries (at most two days of files are in memory)."""
        for future in self._previous:
            future.result()
        self._previous, self._pending = self._pending, []

    def flush(self) -> None:
        """Wait until everything queued is on disk; re-raise the first error."""
        pending, self._previous, self._pending = self._previous + self._pending, [], []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)


def _write_files(folder: Path, stem: str, files: list[WrittenFile], chunks: list[bytes],
                 fmt: DeliveryFormat, control: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ctl = folder / f"{stem}.ctl"
    if ctl.exists():
        ctl.unlink()
    for old in sorted(folder.glob(f"{stem}_*.dat*")):
        old.unlink()
    ctl_lines = []
    for f, chunk in zip(files, chunks):
        if f.name.endswith(".gz"):
            chunk = gzip_bytes(chunk)
        (folder / f.name).write_bytes(chunk)
        ctl_lines.append(f"{f.name}|{f.rows}|{len(chunk)}|{hashlib.md5(chunk).hexdigest()}|{fmt.encoding}\n")
    if control:
        ctl.write_bytes("".join(ctl_lines).encode("ascii"))


def locate(files: list[WrittenFile], position: int) -> tuple[str, int]:
    """(file name, 1-based line number) of the delivery line at 0-based ``position``."""
    for w in reversed(files):
        if position >= w.first_line:
            return w.name, position - w.first_line + 1
    raise IndexError(position)
