"""Calendar-month arithmetic on first-of-month dates (the `month` of every mart)."""

from __future__ import annotations

import calendar
from datetime import date, timedelta


def add_months(m: date, n: int) -> date:
    """First day of the month `n` months after (negative: before) the month of `m`."""
    k = m.year * 12 + m.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def month_days(m: date) -> list[date]:
    """Every day of the month of first day `m`."""
    return [m + timedelta(days=i) for i in range(calendar.monthrange(m.year, m.month)[1])]
