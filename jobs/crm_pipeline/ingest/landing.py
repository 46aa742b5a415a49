"""Discover complete deliveries in a landing zone and parse their control files.

Layout (boss-exports.md):
    <landing>/<feed>/<YYYYMMDD>/<FEED>_<YYYYMMDD>_<NNN>.dat[.gz]
    <landing>/<feed>/<YYYYMMDD>/<FEED>_<YYYYMMDD>.ctl     written last; marks the delivery complete
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from pyarrow import fs as pafs

from crm_pipeline.ingest.reader import join, resolve

ENCODINGS = {"UTF-8": "utf-8", "GBK": "gbk"}
_DATE_DIR = re.compile(r"^\d{8}$")


class ControlFileError(ValueError):
    """A control file that cannot be trusted; the whole delivery fails."""

    def __init__(self, path: str, line_no: int | None, check: str, detail: str):
        where = f"{path}:{line_no}" if line_no else str(path)
        super().__init__(f"{where}: check {check} failed: {detail}")
        self.path, self.line_no, self.check, self.detail = path, line_no, check, detail


@dataclass(frozen=True)
class ControlEntry:
    """One line of a control file: what the producer says it delivered."""

    file_name: str
    row_count: int
    byte_size: int
    md5: str
    encoding: str  # UTF-8 or GBK, as declared

    @property
    def python_codec(self) -> str:
        return ENCODINGS[self.encoding]

    @property
    def gzipped(self) -> bool:
        return self.file_name.endswith(".gz")


@dataclass(frozen=True)
class Delivery:
    """A complete delivery: one feed, one business date, the files its control file lists.

    `delivery_id` identifies this version of the day: a re-delivery has a new control file,
    hence a new id.
    """

    feed: str
    business_date: date
    directory: str  # local path or URI of <landing>/<feed>/<YYYYMMDD>
    control_file: str
    delivery_id: str
    entries: tuple[ControlEntry, ...] = field(default_factory=tuple)
    control_error: str | None = None  # set when the control file itself is unusable
    unlisted_files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def control_name(self) -> str:
        return posixpath.basename(self.control_file)

    @property
    def unlisted_data_files(self) -> tuple[str, ...]:
        """Unlisted files named like this delivery's data files: the control file does not match
        the folder, so the delivery fails. Other names (notes, markers) are only mentioned."""
        pattern = re.compile(rf"{self.feed.upper()}_{self.business_date:%Y%m%d}_\d{{3}}\.dat(\.gz)?")
        return tuple(n for n in self.unlisted_files if pattern.fullmatch(n))

    def path_of(self, entry: ControlEntry) -> str:
        return join(self.directory, entry.file_name)


@dataclass(frozen=True)
class IncompleteFolder:
    """A delivery folder without its control file: still being written (or abandoned); not read."""

    feed: str
    business_date: date
    directory: str
    files: tuple[str, ...]


def read_bytes(location: str | os.PathLike) -> bytes:
    filesystem, path = resolve(location)
    with filesystem.open_input_stream(path, compression=None) as stream:
        return stream.read()


def is_directory(location: str | os.PathLike) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def _listing(location: str) -> dict[str, pafs.FileType]:
    filesystem, path = resolve(location)
    return {posixpath.basename(i.path.rstrip("/")): i.type
            for i in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))}


def parse_control_file(path: str | os.PathLike, feed: str, business_date: date,
                       content: bytes | None = None) -> list[ControlEntry]:
    """Parse `<file name>|<row count>|<byte size>|<md5>|<encoding>` lines; raise on any defect."""
    prefix = f"{feed.upper()}_{business_date:%Y%m%d}_"
    entries: list[ControlEntry] = []
    seen: set[str] = set()
    path = str(path)
    try:
        text = (read_bytes(path) if content is None else content).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ControlFileError(path, None, "control_format", f"not ASCII text ({exc.reason})") from exc
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 5:
            raise ControlFileError(path, line_no, "control_format", f"expected 5 fields, found {len(parts)}")
        name, rows, size, md5, encoding = parts
        if not (name.startswith(prefix) and re.fullmatch(r"\d{3}\.dat(\.gz)?", name[len(prefix):])):
            raise ControlFileError(path, line_no, "control_format", f"file name {name!r} does not match {prefix}NNN.dat[.gz]")
        if not rows.isdigit() or not size.isdigit():
            raise ControlFileError(path, line_no, "control_format", f"row count {rows!r} / size {size!r} not integers")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
            raise ControlFileError(path, line_no, "control_format", f"md5 {md5!r} is not 32 hex digits")
        if encoding not in ENCODINGS:
            raise ControlFileError(path, line_no, "control_format", f"encoding {encoding!r} not in {sorted(ENCODINGS)}")
        if name in seen:
            raise ControlFileError(path, line_no, "control_format", f"file {name} listed twice")
        seen.add(name)
        entries.append(ControlEntry(name, int(rows), int(size), md5.lower(), encoding))
    if not entries:
        raise ControlFileError(path, None, "control_format", "control file lists no data files")
    return entries


def discover(
    landing: str | os.PathLike,
    feeds: list[str],
    date_from: date | None = None,
    date_to: date | None = None,
    incomplete: list[IncompleteFolder] | None = None,
) -> list[Delivery]:
    """Every complete delivery (control file present) of the given feeds, oldest first.

    Folders without a control file are still being written and are not returned; they are
    appended to `incomplete` when given.
    """
    out: list[Delivery] = []
    landing = str(landing)
    for feed in feeds:
        feed_dir = join(landing, feed)
        days = _listing(feed_dir)
        for day in sorted(n for n, t in days.items() if t == pafs.FileType.Directory and _DATE_DIR.match(n)):
            try:
                business_date = datetime.strptime(day, "%Y%m%d").date()
            except ValueError:
                continue
            if (date_from and business_date < date_from) or (date_to and business_date > date_to):
                continue
            day_dir = join(feed_dir, day)
            names = _listing(day_dir)
            ctl_name = f"{feed.upper()}_{day}.ctl"
            if names.get(ctl_name) != pafs.FileType.File:
                if incomplete is not None:
                    incomplete.append(IncompleteFolder(feed, business_date, day_dir, tuple(sorted(names))))
                continue
            ctl = join(day_dir, ctl_name)
            content = read_bytes(ctl)
            delivery_id = f"{feed}/{day}/{hashlib.md5(content).hexdigest()[:16]}"
            try:
                entries = tuple(parse_control_file(ctl, feed, business_date, content))
                error = None
            except ControlFileError as exc:
                entries, error = (), str(exc)
            listed = {e.file_name for e in entries}
            unlisted = tuple(sorted(n for n in names if n != ctl_name and n not in listed))
            out.append(Delivery(feed, business_date, day_dir, ctl, delivery_id, entries, error, unlisted))
    out.sort(key=lambda d: (d.business_date, d.feed))
    return out
