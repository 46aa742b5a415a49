"""Monthly bills: accrual of fees and rated usage per subscription, bill lines, payments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import catalog as cat
from .population import NEVER, Population
from .render import int_str, lookup

ITEM = {name: i for i, name in enumerate(cat.BILL_ITEMS)}


def autopay(account: np.ndarray) -> np.ndarray:
    """Accounts paying by bank auto-debit on the bill-run day (a stable ~20% of accounts)."""
    return (account * 2654435761 % 1000) < 200


class MonthAccumulator:
    """Running sums of one calendar month per subscription row."""

    def __init__(self) -> None:
        self.size = 0
        self.fee = np.zeros(0)
        self.usage = {k: np.zeros(0, dtype=np.int64) for k in ("VOICE", "SMS", "DATA")}
        self.roam_days = np.zeros(0, dtype=np.int64)
        self.opening = np.zeros(0, dtype=np.int64)
        self.first_day = 0
        self.month_key = 0

    def _fit(self, n: int) -> None:
        if n <= self.size:
            return
        grow = max(n, int(self.size * 1.5) + 16)
        self.fee = np.concatenate([self.fee, np.zeros(grow - self.size)])
        for k in self.usage:
            self.usage[k] = np.concatenate([self.usage[k], np.zeros(grow - self.size, dtype=np.int64)])
        self.roam_days = np.concatenate([self.roam_days, np.zeros(grow - self.size, dtype=np.int64)])
        self.size = grow

    def start(self, pop: Population, t: int, month_key: int) -> None:
        """Open month ``month_key`` on day ``t``: the opening base is the state at the end of t-1."""
        self.first_day = t
        self.month_key = month_key
        self.opening = np.flatnonzero(pop.status[: pop.n] != cat.ST_TERMINATED)
        self._fit(pop.n)
        self.fee[:] = 0
        for k in self.usage:
            self.usage[k][:] = 0
        self.roam_days[:] = 0

    def add_day(self, pop: Population, rows: np.ndarray, dim: int, roaming_rows: np.ndarray) -> None:
        """Accrue one day of monthly fee for ``rows`` (active today or terminated today)."""
        self._fit(pop.n)
        self.fee[rows] += cat.PLAN_FEE[pop.plan[rows]] / dim
        self.roam_days[roaming_rows] += 1

    def add_usage(self, pop: Population, item: str, owner: np.ndarray, charge: np.ndarray) -> None:
        self._fit(pop.n)
        if owner.size:
            sums = np.bincount(owner, weights=charge, minlength=pop.n)
            self.usage[item][: pop.n] += np.rint(sums).astype(np.int64)


@dataclass
class Bill:
    """Bill lines of one month, as arrays in line order."""

    month_key: int
    line_id: np.ndarray
    account: np.ndarray
    row: np.ndarray
    item: np.ndarray
    amount: np.ndarray
    due_ymd: int
    paid_ymd: np.ndarray  # 0 = NULL

    def columns(self, amount: np.ndarray | None = None) -> dict[str, object]:
        amt = self.amount if amount is None else amount
        n = self.line_id.size
        return {
            "bill_line_id": int_str(self.month_key * 10**9 + self.line_id, prefix="B"),
            "account_id": int_str(self.account, prefix="A", width=9),
            "subscriber_id": int_str(self.row, prefix="S", width=9),
            "bill_month": int_str(np.full(n, self.month_key, dtype=np.int64)),
            "item_code": lookup(cat.BILL_ITEMS, self.item),
            "amount_fen": int_str(amt),
            "due_date": int_str(np.full(n, self.due_ymd, dtype=np.int64)),
            "paid_date": int_str(self.paid_ymd, null_mask=self.paid_ymd == 0),
        }


def build_bill(pop: Population, acc: MonthAccumulator, last_day: int, month_end_ymd: int,
               run_ymd: int, due_ymd: int, rng: np.random.Generator) -> Bill:
    """Bill lines for every subscription active in the month (active at month open or activated
    in the month): MONTHLY_FEE (pro rata of active days), VOICE/SMS/DATA (sums of the month's
    rated CDR charges), occasional VAS and ROAMING, DISCOUNT (negative), rare ADJUSTMENT."""
    n = pop.n
    added = np.flatnonzero((pop.act_day[:n] >= acc.first_day) & (pop.act_day[:n] <= last_day))
    rows = np.union1d(acc.opening, added)
    m = rows.size
    fee = np.maximum(np.rint(acc.fee[rows]).astype(np.int64), 1)
    post = pop.payment[rows] == cat.POSTPAID
    ent = pop.group[rows] >= 0
    amounts = np.zeros((m, len(cat.BILL_ITEMS)), dtype=np.int64)
    present = np.zeros((m, len(cat.BILL_ITEMS)), dtype=bool)
    amounts[:, ITEM["MONTHLY_FEE"]] = fee
    present[:, ITEM["MONTHLY_FEE"]] = True
    for item in ("VOICE", "SMS", "DATA"):
        v = acc.usage[item][rows]
        amounts[:, ITEM[item]] = v
        present[:, ITEM[item]] = v > 0
    vas = rng.random(m) < 0.2
    amounts[:, ITEM["VAS"]] = rng.choice(np.array([300, 500, 600, 1000, 1500, 2000]), m)
    present[:, ITEM["VAS"]] = vas
    roam = acc.roam_days[rows]
    has_roam = (roam > 0) & (rng.random(m) < 0.5)
    amounts[:, ITEM["ROAMING"]] = 500 * roam
    present[:, ITEM["ROAMING"]] = has_roam
    disc_rate = np.where(ent, 0.15, np.where(post, rng.uniform(0.1, 0.3, m), 0.1))
    has_disc = ent | (post & (rng.random(m) < 0.25)) | (~post & (rng.random(m) < 0.05))
    amounts[:, ITEM["DISCOUNT"]] = -np.maximum(np.rint(fee * disc_rate).astype(np.int64), 1)
    present[:, ITEM["DISCOUNT"]] = has_disc
    adj = np.rint(rng.normal(0, 800, m)).astype(np.int64)
    present[:, ITEM["ADJUSTMENT"]] = (rng.random(m) < 0.02) & (adj != 0)
    amounts[:, ITEM["ADJUSTMENT"]] = adj
    r_idx, i_idx = np.nonzero(present)
    line_rows = rows[r_idx]
    paid = np.where(pop.payment[line_rows] == cat.PREPAID, month_end_ymd,
                    np.where(autopay(pop.customer[line_rows]), run_ymd, 0)).astype(np.int64)
    return Bill(
        month_key=acc.month_key,
        line_id=np.arange(1, r_idx.size + 1, dtype=np.int64),
        account=pop.customer[line_rows].copy(),
        row=line_rows.astype(np.int64),
        item=i_idx.astype(np.int64),
        amount=amounts[r_idx, i_idx],
        due_ymd=due_ymd,
        paid_ymd=paid,
    )


def corrected_amounts(bill: Bill, rng: np.random.Generator, share: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """A corrected re-delivery: a few usage, VAS or adjustment lines credited 3-15%.
    Returns (new amounts, indices of the changed lines)."""
    eligible = np.flatnonzero(np.isin(bill.item, [ITEM["VOICE"], ITEM["DATA"], ITEM["SMS"], ITEM["VAS"]])
                              & (bill.amount >= 20))
    k = min(eligible.size, max(1, int(round(share * bill.line_id.size))))
    changed = np.sort(rng.choice(eligible, k, replace=False)) if k else np.zeros(0, dtype=np.int64)
    new = bill.amount.copy()
    new[changed] = np.rint(new[changed] * rng.uniform(0.85, 0.97, k)).astype(np.int64)
    return new, changed


def account_payments(pop: Population, bill: Bill, run_day: int, rng: np.random.Generator
                     ) -> list[tuple[int, int, int, bool]]:
    """BILL_PAYMENT schedule of postpaid accounts: (pay day, account, amount, auto-debit).

    Auto-debit accounts pay on the bill-run day, the others 1-20 days later; accounts of a line
    on its way to a NON_PAYMENT termination do not pay."""
    post = pop.payment[bill.row] == cat.POSTPAID
    if not post.any():
        return []
    acct = bill.account[post]
    amt = bill.amount[post]
    rows = bill.row[post]
    non_payer = (pop.plan_reason[rows] == cat.TR_NON_PAYMENT) & (pop.t_term[rows] != NEVER)
    accounts, inverse = np.unique(acct, return_inverse=True)
    totals = np.bincount(inverse, weights=amt).astype(np.int64)
    blocked = np.bincount(inverse, weights=non_payer.astype(float)) > 0
    auto = autopay(accounts)
    day = np.where(auto, run_day, run_day + rng.integers(1, 21, accounts.size))
    keep = (~blocked) & (totals > 0)
    return [(int(d), int(a), int(v), bool(x)) for d, a, v, x in
            zip(day[keep].tolist(), accounts[keep].tolist(), totals[keep].tolist(), auto[keep].tolist())]
