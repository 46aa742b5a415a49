"""Calendar-month arithmetic on first-of-month dates (the `month` of every mart)."""

from __future__ import annotations

from datetime import date


def add_months(m: date, n: int) -> date:
    """First day of the month `n` months after (negative: before) the month of `m`."""
    k = m.year * 12 + m.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)
