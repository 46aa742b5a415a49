"""Column-to-text rendering with Arrow compute kernels (no per-record Python objects)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@lru_cache(maxsize=256)
def _dictionary(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


def lookup(values: tuple[str, ...], codes: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """``values[codes]`` as an Arrow string array (NULL where ``null_mask``)."""
    codes = np.asarray(codes, dtype=np.int64)
    idx = pa.array(codes, mask=null_mask) if null_mask is not None else pa.array(codes)
    return _dictionary(tuple(values)).take(idx)


def int_str(values: np.ndarray, prefix: str = "", width: int = 0,
            null_mask: np.ndarray | None = None) -> pa.Array:
    """Integers as decimal text, zero-padded to ``width``, after ``prefix``; NULL where ``null_mask``."""
    arr = pa.array(np.asarray(values, dtype=np.int64), mask=null_mask)
    out = pc.cast(arr, pa.string())
    if width:
        out = pc.utf8_lpad(out, width=width, padding="0")
    if prefix:
        out = pc.binary_join_element_wise(prefix, out, "")
    return out


def join_cols(cols: list, sep: str) -> pa.Array:
    """Element-wise join of string columns (or scalars); NULL renders as the empty string."""
    return pc.binary_join_element_wise(*cols, sep, null_handling="replace", null_replacement="")


def render_lines(fields: tuple[str, ...], cols: dict[str, object]) -> pa.Array:
    """One ``|``-separated line per record, fields in schema order (no line terminator)."""
    missing = [f for f in fields if f not in cols]
    if missing:
        raise KeyError(f"no column rendered for field(s) {missing}")
    return join_cols([cols[f] for f in fields], "|")


def as_binary(arr: pa.Array) -> pa.Array:
    """Lines as ``large_binary`` so rendered and hand-made (possibly invalid) lines mix."""
    if arr.type == pa.large_binary():
        return arr
    if arr.type == pa.string():
        arr = arr.cast(pa.large_string())
    return arr.cast(pa.large_binary())


def terminated_bytes(lines: pa.Array, terminator: bytes) -> tuple[bytes, np.ndarray]:
    """Concatenate ``lines`` each followed by ``terminator``; also return line end offsets."""
    if len(lines) == 0:
        return b"", np.zeros(1, dtype=np.int64)
    term = pa.scalar(terminator, pa.large_binary())
    joined = pc.binary_join_element_wise(as_binary(lines), term, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[joined.offset: joined.offset + len(joined) + 1]
    data = joined.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    return data.slice(start, stop - start).to_pybytes(), offsets - start


def hhmmss(seconds: np.ndarray) -> np.ndarray:
    """Seconds of day -> HHMMSS integers."""
    s = np.asarray(seconds, dtype=np.int64)
    return (s // 3600) * 10000 + (s % 3600 // 60) * 100 + s % 60
