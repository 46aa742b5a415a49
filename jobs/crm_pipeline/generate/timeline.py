"""Day arithmetic on integer day offsets from the first generated business date."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np


class Calendar:
    """Maps day offsets (0 = first business date, negative = before it) to calendar facts.

    Offsets are plain integers so that every lifecycle date is a NumPy int array.
    """

    def __init__(self, start: date, days: int, history_days: int = 800, horizon_days: int = 400):
        self.start = start
        self.days = days
        self.lo = -history_days
        self.hi = days + horizon_days
        offsets = np.arange(self.lo, self.hi, dtype=np.int64)
        d = np.datetime64(start.isoformat(), "D") + offsets
        month = d.astype("datetime64[M]")
        year = month.astype(np.int64) // 12 + 1970
        mon = month.astype(np.int64) % 12 + 1
        dom = (d - month.astype("datetime64[D]")).astype(np.int64) + 1
        dim = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64)
        self._ymd = year * 10000 + mon * 100 + dom
        self._month_key = year * 100 + mon
        self._dom = dom
        self._dim = dim
        self._weekday = ((d.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday; Monday = 0

    def _ix(self, t):
        t = np.asarray(t, dtype=np.int64)
        if t.size and (t.min() < self.lo or t.max() >= self.hi):
            raise ValueError(f"day offset outside the calendar ({self.lo}..{self.hi - 1})")
        return t - self.lo

    def ymd(self, t):
        """YYYYMMDD integer(s) of day offset(s) ``t``."""
        return self._ymd[self._ix(t)]

    def month_key(self, t):
        """YYYYMM integer(s)."""
        return self._month_key[self._ix(t)]

    def day_of_month(self, t):
        return self._dom[self._ix(t)]

    def days_in_month(self, t):
        return self._dim[self._ix(t)]

    def weekday(self, t):
        """0 = Monday ... 6 = Sunday."""
        return self._weekday[self._ix(t)]

    def date(self, t: int) -> date:
        return self.start + timedelta(days=int(t))

    def offset(self, d: date) -> int:
        return (d - self.start).days

    def months_back(self, t: int, months: int) -> int:
        """Offset of the same day of month ``months`` earlier (clamped to the month's length)."""
        d = self.date(t)
        y, m = divmod(d.year * 12 + d.month - 1 - months, 12)
        m += 1
        dim = (date(y + (m == 12), m % 12 + 1, 1) - date(y, m, 1)).days
        return self.offset(date(y, m, min(d.day, dim)))
