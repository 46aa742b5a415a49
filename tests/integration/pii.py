"""The personal data a landing zone delivered, and a scanner that finds any of it in text or
tables: mobile and other-party numbers inside any digit run, names and id numbers as substrings."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from crm_pipeline.feeds import load_feeds

_DIGITS = re.compile(r"\d{11,}")
_PREFIX = re.compile(r"^\+?86(?=\d{11}$)")
_ENCODINGS = {"UTF-8": "utf-8", "GBK": "gbk"}


@dataclass(frozen=True)
class Planted:
    numbers: frozenset[str]  # 11-digit numbers, country prefix dropped: found inside any digit run
    texts: frozenset[str]  # names, id numbers, other numbers, secrets: found as substrings

    @cached_property
    def _texts(self) -> re.Pattern:
        """One pattern for every text, as a trie: an alternation of ten thousand names and id numbers
        is tried one by one at every position of every cell, the trie one character at a time."""
        trie: dict = {}
        for text in self.texts:
            node = trie
            for ch in text:
                node = node.setdefault(ch, {})
            node[""] = {}
        return re.compile(_trie_pattern(trie) or "(?!)")

    def leaks(self, value: object) -> str | None:
        """The personal datum `value` holds, or None."""
        if value is None:
            return None
        text = str(value)
        for run in _DIGITS.findall(text):
            for i in range(len(run) - 10):
                if run[i:i + 11] in self.numbers:
                    return run[i:i + 11]
        found = self._texts.search(text)
        return found.group(0) if found else None

    def scan(self, cells: Iterable[object]) -> set[str]:
        return {hit for hit in map(self.leaks, cells) if hit is not None}


def _trie_pattern(node: dict) -> str:
    """The regular expression of a trie's words (the longest first where one is a prefix of another)."""
    branches = [re.escape(ch) + _trie_pattern(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    pattern = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    return f"(?:{pattern})?" if "" in node else pattern


def planted(landing: Path, *secrets: str, feeds: Iterable[str] | None = None) -> Planted:
    """Every value of a `pii` field in the delivered files of `feeds` (default: every feed with one)."""
    numbers: set[str] = set()
    texts: set[str] = set(secrets)
    specs = load_feeds()
    for feed in feeds or [f for f, s in specs.items() if any(x.pii for x in s.fields)]:
        spec = specs[feed]
        positions = [(i, f) for i, f in enumerate(spec.fields) if f.pii]
        for ctl in sorted((landing / feed).glob("*/*.ctl")):
            for entry in ctl.read_text(encoding="ascii").splitlines():
                if not entry.strip():
                    continue
                name, *_, encoding = entry.split("|")
                data = (ctl.parent / name).read_bytes()
                body = gzip.decompress(data) if name.endswith(".gz") else data
                for line in body.decode(_ENCODINGS[encoding], errors="ignore").splitlines():
                    parts = line.rstrip("\r").split("|")
                    if len(parts) != spec.n_fields:
                        continue
                    for i, f in positions:
                        value = parts[i]
                        if f.type in ("msisdn", "phone"):
                            national = _PREFIX.sub("", value)
                            if len(national) == 11 and national.isdigit():
                                numbers.add(national)
                            elif len(national) >= 8:  # foreign and fixed-line numbers; not short codes
                                texts.add(national)
                        elif len(value) >= 2:
                            texts.add(value)  # names and id numbers
    return Planted(frozenset(numbers), frozenset(texts))
