"""Subscription lifecycle: the planted churn mechanism, suspensions, upgrades, gross adds.

Churn mechanism (documented in docs/generator.md):

* every subscription has a latent risk (``Population.risk``: higher for short tenure, low spend,
  young prepaid users, lower for enterprise lines);
* each day, undecided active subscriptions *decide* to leave with a hazard proportional to
  ``risk * (1 + friend_churn_lift * min(churned contacts in the last friend_churn_days, 3))``,
  scaled so that the expected number of terminations in a calendar month is
  ``churn rate * active subscriptions`` per payment type;
* a decided subscription terminates ``churn_lag_min..churn_lag_max`` days later; in between
  its usage declines, it opens more tickets and complaints, scores lower in surveys and moves
  calls and SMS to other operators (off-net pull), see ``events``;
* the reason is drawn at the decision: PORT_OUT more likely for subscribers with many off-net
  contacts, NON_PAYMENT only for postpaid lines (which go SUSPENDED 15-30 days before the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import catalog as cat
from .timeline import Calendar
from .config import GeneratorConfig
from .population import NEVER, OFFNET_OPS, OFFNET_OPS_P, Numbering, Population, Spawner, random_offnet_numbers

MONTH_DAYS = 30.4375
HISTORY_DAYS = 120


@dataclass
class DayChanges:
    terminated: np.ndarray
    added: np.ndarray


class Lifecycle:
    """Moves the population from the end of day t-1 to the end of day t."""

    def __init__(self, config: GeneratorConfig, cal: Calendar, numbering: Numbering, spawner: Spawner):
        self.cfg = config
        self.cal = cal
        self.numbering = numbering
        self.spawner = spawner
        self.churn = np.array([config.prepaid_churn, config.postpaid_churn])
        self.base_sizes = np.zeros(2)
        self.ent_share_of_postpaid = 0.0
        self.upgrade_map = cat.upgrade_plan_map()

    # ------------------------------------------------------------------ set-up
    def initialise(self, pop: Population, rng: np.random.Generator) -> np.ndarray:
        """Create historic terminated lines and the opening base; plant the churn pipeline that
        is already under way at day 0. Returns the row indices of the opening base."""
        cfg = self.cfg
        n = cfg.subscribers
        n_hist = int(round(n * float(self.churn.mean()) * HISTORY_DAYS / MONTH_DAYS))
        if n_hist:
            t_term = rng.integers(-HISTORY_DAYS, 0, n_hist)
            act = t_term - 30 - np.minimum(rng.exponential(700, n_hist), 4000).astype(np.int64)
            hist = self.spawner.spawn(pop, n_hist, act, rng,
                                      enterprise=rng.random(n_hist) < cfg.enterprise_share, new_groups=True)
            order = hist[np.argsort(t_term, kind="stable")]
            t_term_sorted = np.sort(t_term, kind="stable")
            self._draw_reasons(pop, hist, rng)
            pop.status[hist] = cat.ST_TERMINATED
            pop.status_day[hist] = t_term
            pop.t_term[hist] = t_term
            pop.reason[hist] = pop.plan_reason[hist]
            for row, day in zip(order.tolist(), t_term_sorted.tolist()):
                if pop.reason[row] != cat.TR_PORT_OUT:
                    self.numbering.release(pop.msisdn[row:row + 1], day)
            # historic groups are not offered to new enterprise lines
            pop.group_sizes[:] = [0] * len(pop.group_sizes)

        act = -(1 + np.minimum(rng.exponential(1400, n), 5000)).astype(np.int64)
        ent = np.arange(n) < int(round(n * cfg.enterprise_share))  # group lines first, contiguous
        base = self.spawner.spawn(pop, n, act, rng, enterprise=ent, new_groups=True, family_lines=True)
        for pt in (cat.PREPAID, cat.POSTPAID):
            self.base_sizes[pt] = float((pop.payment[base] == pt).sum())
        if self.base_sizes[cat.POSTPAID]:
            self.ent_share_of_postpaid = float(ent.sum()) / self.base_sizes[cat.POSTPAID]

        # decisions taken before day 0 so that terminations run at the target rate from day 1
        lag_min, lag_max = cfg.churn_lag_min, cfg.churn_lag_max
        taus = np.arange(1, lag_max + 1)
        # decided strictly before day 0 (day 0 decides in step()): P(lag > tau)
        p_left = np.clip((lag_max - taus) / (lag_max - lag_min + 1), 0.0, 1.0)
        for pt in (cat.PREPAID, cat.POSTPAID):
            members = base[pop.payment[base] == pt]
            if members.size == 0:
                continue
            expected = self.churn[pt] * members.size / self.cal.days_in_month(taus) * p_left
            counts = rng.poisson(expected)
            total = min(int(counts.sum()), members.size)
            if total == 0:
                continue
            tau = np.repeat(taus, counts)[:total]
            w = pop.risk[members]
            chosen = rng.choice(members, total, replace=False, p=w / w.sum())
            lag = rng.integers(np.maximum(tau + 1, lag_min), lag_max + 1)
            self._decide(pop, chosen, tau - lag, tau, rng)
            susp_now = chosen[pop.t_np_susp[chosen] <= 0]
            pop.status[susp_now] = cat.ST_SUSPENDED
            pop.status_day[susp_now] = np.maximum(pop.t_np_susp[susp_now], pop.act_day[susp_now])
            pop.t_np_susp[susp_now] = NEVER
        # a few lines are in a temporary suspension at day 0
        cand = base[(pop.status[base] == cat.ST_ACTIVE) & (pop.t_term[base] == NEVER)]
        k = rng.binomial(cand.size, min(1.0, cfg.suspend_rate * 11.5 / MONTH_DAYS))
        if k:
            sus = rng.choice(cand, k, replace=False)
            pop.status[sus] = cat.ST_SUSPENDED
            pop.status_day[sus] = np.maximum(-rng.integers(0, 10, k), pop.act_day[sus])
            pop.susp_end[sus] = rng.integers(1, 13, k)
        return base

    # ------------------------------------------------------------------ daily step
    def step(self, pop: Population, t: int, rng: np.random.Generator) -> DayChanges:
        cfg = self.cfg
        n = pop.n
        status = pop.status[:n]
        terminated = np.flatnonzero((pop.t_term[:n] == t) & (status != cat.ST_TERMINATED))
        self._terminate(pop, terminated, t, rng)

        resume = np.flatnonzero((status == cat.ST_SUSPENDED) & (pop.susp_end[:n] == t))
        pop.status[resume] = cat.ST_ACTIVE
        pop.status_day[resume] = t
        pop.susp_end[resume] = NEVER

        np_susp = np.flatnonzero((pop.t_np_susp[:n] == t) & (status != cat.ST_TERMINATED))
        fresh = np_susp[pop.status[np_susp] == cat.ST_ACTIVE]
        pop.status[np_susp] = cat.ST_SUSPENDED
        pop.status_day[fresh] = t
        pop.susp_end[np_susp] = NEVER

        cand = np.flatnonzero((status == cat.ST_ACTIVE) & (pop.t_term[:n] > t + 25))
        start = cand[rng.random(cand.size) < cfg.suspend_rate / MONTH_DAYS]
        pop.status[start] = cat.ST_SUSPENDED
        pop.status_day[start] = t
        pop.susp_end[start] = t + rng.integers(3, 21, start.size)

        live = np.flatnonzero(status != cat.ST_TERMINATED)
        for gen, scale in ((4, 1.0), (3, 0.5), (2, 0.25)):
            cand = live[pop.gen[live] == gen]
            p = cfg.upgrade_rate * scale / MONTH_DAYS * np.clip(pop.i_data[cand], 0.3, 3.0)
            up = cand[rng.random(cand.size) < p]
            pop.gen[up] = gen + 1
            pop.plan[up] = self.upgrade_map[pop.plan[up]]

        lag_min, lag_max = cfg.churn_lag_min, cfg.churn_lag_max
        boost = np.where(pop.boost_until[live] >= t, np.minimum(pop.boost[live], 3.0), 0.0)
        weight = pop.risk[live] * (1.0 + cfg.friend_churn_lift * boost)
        for pt in (cat.PREPAID, cat.POSTPAID):
            in_pt = pop.payment[live] == pt
            n_pt = int(in_pt.sum())
            sel = in_pt & (pop.t_term[live] == NEVER)
            cand = live[sel]
            if cand.size == 0:
                continue
            w = weight[sel]
            lag = rng.integers(lag_min, lag_max + 1, cand.size)
            p = self.churn[pt] * n_pt / self.cal.days_in_month(t + lag) * w / w.sum()
            hit = rng.random(cand.size) < p
            self._decide(pop, cand[hit], np.full(int(hit.sum()), t), t + lag[hit], rng)

        adds = rng.poisson(self.churn * self.base_sizes / float(self.cal.days_in_month(t)))
        n_add = int(adds.sum())
        added = np.zeros(0, dtype=np.int64)
        if n_add:
            post = np.zeros(n_add, dtype=bool)
            post[adds[0]:] = True
            post = post[rng.permutation(n_add)]
            ent = post & (rng.random(n_add) < self.ent_share_of_postpaid)
            pool = np.flatnonzero(pop.status[: pop.n] != cat.ST_TERMINATED)
            added = self.spawner.spawn(pop, n_add, np.full(n_add, t), rng, postpaid=post, enterprise=ent,
                                       contact_pool=pool, reuse_numbers_at=t)
        return DayChanges(terminated=terminated, added=added)

    # ------------------------------------------------------------------ helpers
    def _draw_reasons(self, pop: Population, idx: np.ndarray, rng: np.random.Generator) -> None:
        post = pop.payment[idx] == cat.POSTPAID
        ent = pop.group[idx] >= 0
        w = np.empty((idx.size, 4))
        w[:, cat.TR_VOLUNTARY] = 0.55
        w[:, cat.TR_PORT_OUT] = 0.20 * np.clip(pop.off_pref[idx] / 0.24, 0.2, 4.0) ** 1.5
        w[:, cat.TR_OTHER] = 0.08
        w[:, cat.TR_NON_PAYMENT] = np.where(post, np.where(ent, 0.05, 0.22), 0.0)
        cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        u = rng.random(idx.size)[:, None]
        pop.plan_reason[idx] = np.minimum((u > cum).sum(axis=1), 3)

    def _decide(self, pop: Population, idx: np.ndarray, t_decide: np.ndarray, t_term: np.ndarray,
                rng: np.random.Generator) -> None:
        if idx.size == 0:
            return
        pop.t_decide[idx] = t_decide
        pop.t_term[idx] = t_term
        self._draw_reasons(pop, idx, rng)
        reason = pop.plan_reason[idx]
        port = reason == cat.TR_PORT_OUT
        pop.pull[idx] = np.where(port, rng.uniform(0.35, 0.7, idx.size),
                                 np.where(reason == cat.TR_NON_PAYMENT, 0.1, rng.uniform(0.1, 0.35, idx.size)))
        ops = np.where(rng.random((idx.size, 2)) < 0.6, cat.OP_CUCC, cat.OP_CTCC).astype(np.int8)
        pop.pull_op[idx] = ops
        pop.pull_num[idx] = random_offnet_numbers(ops.ravel(), np.repeat(pop.city[idx].astype(np.int64), 2),
                                                  rng).reshape(idx.size, 2)
        np_rows = idx[reason == cat.TR_NON_PAYMENT]
        pop.t_np_susp[np_rows] = pop.t_term[np_rows] - rng.integers(15, 31, np_rows.size)

    def _terminate(self, pop: Population, idx: np.ndarray, t: int, rng: np.random.Generator) -> None:
        if idx.size == 0:
            return
        pop.status[idx] = cat.ST_TERMINATED
        pop.status_day[idx] = t
        pop.reason[idx] = pop.plan_reason[idx]
        pop.susp_end[idx] = NEVER
        pop.t_np_susp[idx] = NEVER
        kept = idx[pop.reason[idx] != cat.TR_PORT_OUT]
        self.numbering.release(pop.msisdn[kept], t)
        n = pop.n
        hit = np.isin(pop.c_sub[:n], idx)
        if not hit.any():
            return
        rows, slots = np.nonzero(hit)
        gone = pop.c_sub[rows, slots]
        ported = pop.reason[gone] == cat.TR_PORT_OUT
        ops = np.where(ported, np.where(rng.random(rows.size) < 0.6, cat.OP_CUCC, cat.OP_CTCC),
                       rng.choice(OFFNET_OPS, rows.size, p=OFFNET_OPS_P)).astype(np.int8)
        nums = random_offnet_numbers(ops, pop.city[rows].astype(np.int64), rng)
        nums[ported] = pop.msisdn[gone[ported]]  # a ported number keeps ringing, on another network
        pop.c_op[rows, slots] = ops
        pop.c_num[rows, slots] = nums
        pop.c_sub[rows, slots] = -1
        cnt = np.bincount(rows, minlength=n)
        r = np.flatnonzero(cnt)
        still = pop.boost_until[r] >= t
        pop.boost[r] = np.where(still, pop.boost[r], 0.0) + cnt[r]
        pop.boost_until[r] = t + self.cfg.friend_churn_days
