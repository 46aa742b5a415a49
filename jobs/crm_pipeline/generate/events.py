"""Daily event records (CDRs, recharges, tickets, surveys), vectorised per day and feed.

Each generator returns an :class:`EventBatch`: rendered text columns keyed by schema field
name plus the owning subscription row of every record, in the record order of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import catalog as cat
from .config import GeneratorConfig
from .lifecycle import MONTH_DAYS
from .population import NEVER, Population, random_offnet_numbers
from .render import hhmmss, int_str, join_cols, lookup

RANDOM_PARTY_OPS = np.array([cat.OP_ON_NET, cat.OP_CMCC, cat.OP_CUCC, cat.OP_CTCC, cat.OP_FIXED, cat.OP_INTL])
RANDOM_PARTY_P = np.array([0.30, 0.12, 0.25, 0.18, 0.12, 0.03])
RECHARGE_DENOMINATIONS = np.array([1000, 2000, 3000, 5000, 10000, 20000, 30000, 50000], dtype=np.int64)
USAGE_SHARE = {"voice": 0.45, "sms": 0.08, "data": 0.47}  # split of the monthly usage budget
SURVEY_SUNDAY = 6


@dataclass
class EventBatch:
    """Records of one feed and event day, in file order."""

    cols: dict[str, object]
    owner: np.ndarray
    event_day: int
    charge: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.owner.size)


@dataclass
class Day:
    """What the event generators need to know about one business day."""

    t: int
    ymd: int
    dim: int
    weekday: int
    active: np.ndarray        # rows ACTIVE or SUSPENDED at the end of the day
    progress: np.ndarray      # churn progress 0..1 per active row (0 when not leaving)
    suspended: np.ndarray     # bool per active row
    roaming: np.ndarray       # bool per active row
    roam_city: np.ndarray     # city index while roaming, per active row
    overage: np.ndarray       # monthly usage budget (fen) per active row


def build_day(pop: Population, t: int, ymd: int, dim: int, weekday: int,
              rng: np.random.Generator) -> Day:
    """Day context after the lifecycle step of day ``t``."""
    active = np.flatnonzero(pop.status[: pop.n] != cat.ST_TERMINATED)
    td = pop.t_decide[active].astype(np.int64)
    tt = pop.t_term[active].astype(np.int64)
    decided = tt != NEVER
    span = np.where(decided, np.maximum(tt - td, 1), 1)
    progress = np.where(decided, np.clip((t - td) / span, 0.0, 1.0), 0.0)
    roaming = rng.random(active.size) < 0.02
    roam_city = (pop.city[active] + rng.integers(1, len(cat.CITIES), active.size)) % len(cat.CITIES)
    fee = cat.PLAN_FEE[pop.plan[active]]
    spend = pop.spend[active]
    overage = np.maximum(spend - fee, 0.15 * spend)
    return Day(t=t, ymd=ymd, dim=dim, weekday=weekday, active=active, progress=progress,
               suspended=pop.status[active] == cat.ST_SUSPENDED, roaming=roaming,
               roam_city=roam_city.astype(np.int64), overage=overage)


# ---------------------------------------------------------------------------- helpers
def _seconds(profile: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    hours = rng.choice(24, n, p=profile / profile.sum())
    return hours * 3600 + rng.integers(0, 3600, n)


def _poisson_counts(weight: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Records per row with mean ``rate`` per row overall and shares proportional to ``weight``."""
    total = weight.sum()
    if total <= 0 or rate <= 0:
        return np.zeros(weight.size, dtype=np.int64)
    return rng.poisson(rate * weight * (weight.size / total))


def served_msisdn(numbers: np.ndarray, share: float, rng: np.random.Generator) -> pa.Array:
    """Own numbers as delivered: mostly 11 digits, a ``share`` written with ``+86`` or ``86``."""
    u = rng.random(numbers.size)
    code = np.where(u < share / 2, 1, np.where(u < share, 2, 0))
    return join_cols([lookup(("", "+86", "86"), code), int_str(numbers)], "")


def party_text(op: np.ndarray, num: np.ndarray) -> pa.Array:
    """Other-party numbers as dialled: fixed lines with their leading 0, international with 00."""
    pfx = np.where(op == cat.OP_FIXED, 1, np.where(op == cat.OP_INTL, 2, 0))
    return join_cols([lookup(("", "0", "00"), pfx), int_str(num)], "")


def _other_party(pop: Population, day: Day, loc: np.ndarray, owner: np.ndarray, p_contact: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(operator code, number) of the other party: a contact (its current number when on-net),
    a random party, or, for a leaving subscriber, the off-net numbers pulling it away."""
    n = owner.size
    slot = (rng.random(n) * pop.n_contacts[owner]).astype(np.int64)
    csub = pop.c_sub[owner, slot]
    onnet = csub >= 0
    num = np.where(onnet, pop.msisdn[np.maximum(csub, 0)], pop.c_num[owner, slot])
    op = np.where(onnet, cat.OP_ON_NET, pop.c_op[owner, slot]).astype(np.int64)

    rand = rng.random(n) >= p_contact
    k = int(rand.sum())
    if k:
        r_op = rng.choice(RANDOM_PARTY_OPS, k, p=RANDOM_PARTY_P)
        r_num = random_offnet_numbers(r_op, pop.city[owner[rand]].astype(np.int64), rng)
        on = r_op == cat.OP_ON_NET
        r_num[on] = pop.msisdn[day.active[rng.integers(0, day.active.size, int(on.sum()))]]
        op[rand] = r_op
        num[rand] = r_num

    pulled = rng.random(n) < pop.pull[owner] * day.progress[loc]
    k = int(pulled.sum())
    if k:
        j = rng.integers(0, 2, k)
        op[pulled] = pop.pull_op[owner[pulled], j]
        num[pulled] = pop.pull_num[owner[pulled], j]
    return op, num


def _cells(pop: Population, day: Day, loc: np.ndarray, owner: np.ndarray, rng: np.random.Generator) -> pa.Array:
    roam = day.roaming[loc]
    city = np.where(roam, day.roam_city[loc], pop.city[owner].astype(np.int64))
    cell = np.where(roam, rng.integers(10000, 99999, owner.size),
                    pop.home_cell[owner] + rng.integers(0, 4, owner.size) * rng.integers(0, 2, owner.size))
    return join_cols([lookup(cat.CITY_CODES, city), int_str(cell)], "-")


def _charges(unit: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    """Rated charges: a share ``q`` of records is charged, exponential amounts, mean ``unit``."""
    n = unit.size
    charged = rng.random(n) < q
    return np.rint(unit * charged * rng.exponential(1.0, n) / q).astype(np.int64)


def _ids(prefix: str, ymd: int, n: int, digits: int, first: int = 0) -> pa.Array:
    return int_str(ymd * 10**digits + first + np.arange(n, dtype=np.int64), prefix=prefix)


def _timestamps(ymd: int, seconds: np.ndarray) -> pa.Array:
    return int_str(ymd * 1_000_000 + hhmmss(seconds))


def _spread(day: Day, counts: np.ndarray, profile: np.ndarray, rng: np.random.Generator):
    loc = np.repeat(np.arange(day.active.size), counts)
    sec = _seconds(profile, loc.size, rng)
    order = np.argsort(sec)
    return loc[order], sec[order]


# ---------------------------------------------------------------------------- CDRs
def voice(pop: Population, day: Day, cfg: GeneratorConfig, rng: np.random.Generator) -> EventBatch:
    act = day.active
    base = pop.i_voice[act]
    weight = base * (1 - 0.5 * day.progress) * np.where(day.suspended, 0.3, 1.0)
    loc, sec = _spread(day, _poisson_counts(weight, cfg.voice_per_day, rng), cat.VOICE_HOURS, rng)
    owner = act[loc]
    n = owner.size
    mo = (rng.random(n) < 0.55) & ~day.suspended[loc]
    op, num = _other_party(pop, day, loc, owner, 0.82, rng)
    scope = np.zeros(n, dtype=np.int64)
    scope[op == cat.OP_CMCC] = 1
    scope[((op == cat.OP_CUCC) | (op == cat.OP_CTCC)) & (rng.random(n) < 0.08)] = 1
    scope[day.roaming[loc]] = 2
    scope[op == cat.OP_INTL] = 3
    duration = np.where(rng.random(n) < 0.04, 0, np.rint(rng.lognormal(np.log(55), 1.0, n)))
    duration = np.minimum(duration, 7200).astype(np.int64)
    lam_nom = cfg.voice_per_day * base / base.mean()
    unit = day.overage * USAGE_SHARE["voice"] / (MONTH_DAYS * np.maximum(lam_nom, 1e-3) * 0.55)
    charge = _charges(unit[loc], 0.4, rng) * mo
    cols = {
        "cdr_id": _ids("V", day.ymd, n, 9),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "other_party": party_text(op, num),
        "direction": lookup(cat.DIRECTIONS, (~mo).astype(np.int64)),
        "start_time": _timestamps(day.ymd, sec),
        "duration_sec": int_str(duration),
        "call_scope": lookup(cat.CALL_SCOPES, scope),
        "other_operator": lookup(cat.OPERATORS, op),
        "cell_id": _cells(pop, day, loc, owner, rng),
        "charge_fen": int_str(charge),
    }
    return EventBatch(cols, owner, day.t, charge)


def sms(pop: Population, day: Day, cfg: GeneratorConfig, rng: np.random.Generator) -> EventBatch:
    act = day.active
    base = pop.i_sms[act]
    weight = base * (1 - 0.5 * day.progress) * np.where(day.suspended, 0.3, 1.0)
    loc, sec = _spread(day, _poisson_counts(weight, cfg.sms_per_day, rng), cat.SMS_HOURS, rng)
    owner = act[loc]
    n = owner.size
    mo = (rng.random(n) < 0.5) & ~day.suspended[loc]
    a2p = ~mo & (rng.random(n) < 0.35)
    mms = ~a2p & (rng.random(n) < 0.03)
    op, num = _other_party(pop, day, loc, owner, 0.85, rng)
    op[a2p] = cat.OP_ON_NET
    party = party_text(op, num)
    if a2p.any():
        senders = lookup(cat.A2P_SENDERS, rng.integers(0, len(cat.A2P_SENDERS), n))
        party = pc.if_else(pa.array(a2p), senders, party)
    lam_nom = cfg.sms_per_day * base / base.mean()
    unit = day.overage * USAGE_SHARE["sms"] / (MONTH_DAYS * np.maximum(lam_nom, 1e-3) * 0.5)
    charge = _charges(unit[loc] * np.where(mms, 2.0, 1.0), 0.5, rng) * mo
    sms_type = np.where(a2p, 1, np.where(mms, 2, 0))
    cols = {
        "cdr_id": _ids("M", day.ymd, n, 9),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "other_party": party,
        "direction": lookup(cat.DIRECTIONS, (~mo).astype(np.int64)),
        "event_time": _timestamps(day.ymd, sec),
        "sms_type": lookup(cat.SMS_TYPES, sms_type),
        "other_operator": lookup(cat.OPERATORS, op),
        "charge_fen": int_str(charge),
    }
    return EventBatch(cols, owner, day.t, charge)


def data(pop: Population, day: Day, cfg: GeneratorConfig, rng: np.random.Generator) -> EventBatch:
    act = day.active
    base = pop.i_data[act]
    weight = base * (1 - 0.6 * day.progress) * np.where(day.suspended, 0.0, 1.0)
    loc, sec = _spread(day, _poisson_counts(weight, cfg.data_per_day, rng), cat.DATA_HOURS, rng)
    owner = act[loc]
    n = owner.size
    duration = np.minimum(np.rint(rng.lognormal(np.log(600), 1.1, n)), 3600).astype(np.int64)
    down = np.rint(rng.lognormal(np.log(4e6), 1.1, n) * pop.byte_scale[owner]
                   * (1 - 0.4 * day.progress[loc])).astype(np.int64)
    up = np.rint(down * rng.uniform(0.04, 0.2, n)).astype(np.int64)
    gen = pop.gen[owner].astype(np.int64)
    u = rng.random(n)
    drop = np.select([gen == 5, gen == 4, gen == 3], [(u > 0.72).astype(np.int64) + (u > 0.98),
                                                      (u > 0.95).astype(np.int64), (u > 0.8).astype(np.int64)], 0)
    rat = np.maximum(gen - drop, 2) - 2
    lam_nom = cfg.data_per_day * base / base.mean()
    unit = day.overage * USAGE_SHARE["data"] / (MONTH_DAYS * np.maximum(lam_nom, 1e-3))
    charge = _charges(unit[loc], 0.3, rng)
    cols = {
        "cdr_id": _ids("D", day.ymd, n, 9),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "start_time": _timestamps(day.ymd, sec),
        "duration_sec": int_str(duration),
        "uplink_bytes": int_str(up),
        "downlink_bytes": int_str(down),
        "rat": lookup(cat.NETWORK_GENS, rat),
        "apn": lookup(cat.APNS, rng.choice(len(cat.APNS), n, p=cat.APN_P)),
        "cell_id": _cells(pop, day, loc, owner, rng),
        "charge_fen": int_str(charge),
    }
    return EventBatch(cols, owner, day.t, charge)


# ---------------------------------------------------------------------------- money
def recharges(pop: Population, day: Day, cfg: GeneratorConfig, payments: list[tuple[int, int, bool]],
              rng: np.random.Generator) -> EventBatch:
    """Prepaid top-ups when the balance runs low, bill payments due today, rare refunds.

    ``payments`` holds (subscription row paying for its account, amount fen, auto-debit).
    """
    act = day.active
    pre = pop.payment[act] == cat.PREPAID
    spend = pop.spend[act]
    low = pre & (pop.balance[act] < 0.3 * spend) & (rng.random(act.size) < 0.5 * (1 - 0.8 * day.progress))
    top = act[low]
    want = spend[low] * rng.uniform(0.8, 2.0, top.size)
    amount = RECHARGE_DENOMINATIONS[np.minimum(np.searchsorted(RECHARGE_DENOMINATIONS, want),
                                               RECHARGE_DENOMINATIONS.size - 1)]
    pop.balance[top] += amount
    refund_rows = act[pre & (rng.random(act.size) < 0.0004)]
    refund_amt = -rng.choice(np.array([500, 1000, 2000, 3000, 5000], dtype=np.int64), refund_rows.size)
    pop.balance[refund_rows] += refund_amt
    pay_rows = np.array([p[0] for p in payments], dtype=np.int64)
    pay_amt = np.array([p[1] for p in payments], dtype=np.int64)
    pay_auto = np.array([p[2] for p in payments], dtype=bool)

    owner = np.concatenate([top, pay_rows, refund_rows])
    amounts = np.concatenate([amount, pay_amt, refund_amt])
    kind = np.concatenate([np.zeros(top.size, np.int64), np.ones(pay_rows.size, np.int64),
                           np.full(refund_rows.size, 2, np.int64)])
    n = owner.size
    chan_top = rng.choice(np.array([1, 0, 4, 2]), top.size, p=[0.55, 0.15, 0.20, 0.10])
    chan_pay = np.where(pay_auto, 3, rng.choice(np.array([1, 3, 2]), pay_rows.size, p=[0.5, 0.3, 0.2]))
    chan_ref = rng.choice(np.array([2, 1]), refund_rows.size, p=[0.6, 0.4])
    channel = np.concatenate([chan_top, chan_pay, chan_ref])
    sec = _seconds(cat.SMS_HOURS, n, rng)
    sec[top.size: top.size + pay_rows.size] = np.where(pay_auto, rng.integers(3600, 7200, pay_rows.size),
                                                       sec[top.size: top.size + pay_rows.size])
    order = np.argsort(sec, kind="stable")
    owner, amounts, kind, channel, sec = owner[order], amounts[order], kind[order], channel[order], sec[order]
    cols = {
        "txn_id": _ids("P", day.ymd, n, 8),
        "account_id": int_str(pop.customer[owner], prefix="A", width=9),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "txn_time": _timestamps(day.ymd, sec),
        "txn_type": lookup(cat.RECHARGE_TYPES, kind),
        "amount_fen": int_str(amounts),
        "channel": lookup(cat.RECHARGE_CHANNELS, channel),
    }
    return EventBatch(cols, owner, day.t)


# ---------------------------------------------------------------------------- care
def tickets(pop: Population, day: Day, cfg: GeneratorConfig, ymd_of: Callable[[np.ndarray], np.ndarray],
            rng: np.random.Generator) -> EventBatch:
    """Tickets created today, resolved 0..ticket_max_resolve_days later (never after the line
    terminates). ``extra['resolve_day']`` is the day the ticket is resolved (it is re-delivered
    that day with resolved_time and satisfaction); ``extra['open_cols']`` the columns of the
    first, still open, version."""
    act = day.active
    weight = (1 + 3 * day.progress + 0.5 * (pop.gen[act] <= 3) + 1.0 * day.suspended)
    loc, sec = _spread(day, _poisson_counts(weight, cfg.ticket_rate / MONTH_DAYS, rng), cat.OFFICE_HOURS, rng)
    owner = act[loc]
    n = owner.size
    prog = day.progress[loc]
    complaint = rng.random(n) < np.clip(cfg.complaint_share * (0.9 + 1.5 * prog), 0, 0.95)
    pop.last_complaint[owner[complaint]] = day.t
    regulator = complaint & (rng.random(n) < cfg.regulator_share * (1 + 2 * prog))
    channel = np.where(regulator, 3, rng.choice(np.array([0, 2, 1]), n, p=[0.6, 0.25, 0.15]))
    cat_p_c = [0.35, 0.30, 0.20, 0.10, 0.05]
    cat_p_n = [0.30, 0.15, 0.25, 0.15, 0.15]
    category = np.where(complaint, rng.choice(5, n, p=cat_p_c), rng.choice(5, n, p=cat_p_n))
    max_d = cfg.ticket_max_resolve_days
    p_delay = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04][: max_d + 1])
    # resolved by the day the line terminates at the latest, so every version maps to it
    resolve_day = np.minimum(day.t + rng.choice(max_d + 1, n, p=p_delay / p_delay.sum()),
                             pop.t_term[owner].astype(np.int64))
    delay = resolve_day - day.t
    resolved_sec = np.where(delay == 0, sec + ((86399 - sec) * rng.random(n)).astype(np.int64),
                            _seconds(cat.OFFICE_HOURS, n, rng))
    resolved_sec = np.maximum(resolved_sec, np.where(delay == 0, sec + 60, 0)).clip(max=86399)
    sat = np.clip(np.rint(4.2 - 1.2 * complaint - 1.5 * prog - 1.0 * regulator + rng.normal(0, 0.9, n)), 1, 5)
    created = _timestamps(day.ymd, sec)
    resolved_ymd = ymd_of(resolve_day)
    resolved = int_str(resolved_ymd * 1_000_000 + hhmmss(resolved_sec))
    cols = {
        "ticket_id": _ids("T", day.ymd, n, 7),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "created_time": created,
        "channel": lookup(cat.TICKET_CHANNELS, channel),
        "category": lookup(cat.TICKET_CATEGORIES, category),
        "is_complaint": int_str(complaint.astype(np.int64)),
        "resolved_time": resolved,
        "satisfaction": int_str(sat.astype(np.int64)),
    }
    empty = pa.nulls(n, pa.string())
    open_cols = dict(cols, resolved_time=empty, satisfaction=empty)
    return EventBatch(cols, owner, day.t, extra={"resolve_day": resolve_day, "open_cols": open_cols})


def surveys(pop: Population, day: Day, cfg: GeneratorConfig, rng: np.random.Generator) -> EventBatch:
    """Questionnaire answers (none on Sundays).

    Drivers: service falls with a complaint in the last 30 days and while leaving, quality is
    lower on 2G/3G and higher on 5G, value is lower for high spenders; overall =
    w_service*service + w_quality*quality + w_value*value + N(0, survey_noise), rounded, 1..10.
    """
    act = day.active
    if day.weekday == SURVEY_SUNDAY or cfg.survey_rate <= 0:
        owner = np.zeros(0, dtype=np.int64)
        loc = owner
    else:
        loc = np.flatnonzero(rng.random(act.size) < cfg.survey_rate)
        owner = act[loc]
    n = owner.size
    prog = day.progress[loc]
    recent = (day.t - pop.last_complaint[owner]) <= 30

    def score(x):
        return np.clip(np.rint(x), 1, 10).astype(np.int64)

    service = score(pop.sat_service[owner] - 1.5 * prog - 1.2 * recent + rng.normal(0, 1.0, n))
    quality = score(pop.sat_quality[owner] - 1.0 * prog + rng.normal(0, 1.0, n))
    value = score(pop.sat_value[owner] - 1.0 * prog + rng.normal(0, 1.0, n))
    w_s, w_q, w_v = cfg.survey_weights
    overall = score(w_s * service + w_q * quality + w_v * value + rng.normal(0, cfg.survey_noise, n))
    cols = {
        "response_id": _ids("Q", day.ymd, n, 7),
        "msisdn": served_msisdn(pop.msisdn[owner], cfg.prefix_share, rng),
        "survey_date": int_str(np.full(n, day.ymd, dtype=np.int64)),
        "service_score": int_str(service),
        "quality_score": int_str(quality),
        "value_score": int_str(value),
        "overall_score": int_str(overall),
    }
    return EventBatch(cols, owner, day.t)
