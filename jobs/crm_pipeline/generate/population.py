"""The subscription base: one row per subscription, held as NumPy arrays.

Rows are never removed: a terminated subscription keeps its row (the snapshot lists it for
13 months) and its index is its identity (``subscriber_id`` = ``S`` + 9-digit index).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import catalog as cat
from .timeline import Calendar
from .config import GeneratorConfig
from .render import int_str, join_cols, lookup

NEVER = np.int32(2**30)
K_CONTACTS = 10
OFFNET_OPS = np.array([cat.OP_CMCC, cat.OP_CUCC, cat.OP_CTCC, cat.OP_FIXED], dtype=np.int8)
OFFNET_OPS_P = np.array([0.12, 0.45, 0.33, 0.10])

_SCALARS: dict[str, tuple[type, object]] = {
    "msisdn": (np.int64, 0),
    "customer": (np.int64, 0),
    "group": (np.int32, -1),
    "payment": (np.int8, 0),
    "brand": (np.int8, 0),
    "city": (np.int8, 0),
    "channel": (np.int8, 0),
    "age": (np.int16, 0),
    "act_day": (np.int32, 0),
    "spend": (np.float64, 0.0),
    "i_voice": (np.float64, 1.0),
    "i_sms": (np.float64, 1.0),
    "i_data": (np.float64, 1.0),
    "byte_scale": (np.float64, 1.0),
    "risk": (np.float64, 1.0),
    "off_pref": (np.float64, 0.0),
    "plan": (np.int16, 0),
    "gen": (np.int8, 4),
    "status": (np.int8, 0),
    "status_day": (np.int32, 0),
    "reason": (np.int8, -1),
    "t_decide": (np.int32, NEVER),
    "t_term": (np.int32, NEVER),
    "plan_reason": (np.int8, -1),
    "t_np_susp": (np.int32, NEVER),
    "pull": (np.float64, 0.0),
    "susp_end": (np.int32, NEVER),
    "boost": (np.float64, 0.0),
    "boost_until": (np.int32, -NEVER),
    "balance": (np.float64, 0.0),
    "last_complaint": (np.int32, -NEVER),
    "home_cell": (np.int32, 10000),
    "reassigned": (np.bool_, False),
    "sat_service": (np.float64, 7.0),
    "sat_quality": (np.float64, 7.0),
    "sat_value": (np.float64, 7.0),
    "n_contacts": (np.int8, 0),
}
_MATRICES: dict[str, tuple[type, object, int]] = {
    "c_sub": (np.int64, -1, K_CONTACTS),
    "c_op": (np.int8, cat.OP_ON_NET, K_CONTACTS),
    "c_num": (np.int64, 0, K_CONTACTS),
    "pull_num": (np.int64, 0, 2),
    "pull_op": (np.int8, cat.OP_CUCC, 2),
}


class Population:
    """Column store of subscriptions with amortised growth; ``n`` rows are in use."""

    def __init__(self, capacity: int):
        self.n = 0
        self.capacity = max(capacity, 16)
        for name, (dtype, fill) in _SCALARS.items():
            setattr(self, name, np.full(self.capacity, fill, dtype=dtype))
        for name, (dtype, fill, width) in _MATRICES.items():
            setattr(self, name, np.full((self.capacity, width), fill, dtype=dtype))
        self.group_customer: list[int] = []  # group index -> customer index
        self.group_sizes: list[int] = []
        self.group_city: list[int] = []
        self.group_name: list[str] = []
        self.group_licence: list[str] = []
        self.n_customers = 0
        self._static_chunks: dict[str, list[pa.Array]] = {}
        self._static: dict[str, pa.Array] = {}

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more rows."""
        need = self.n + extra
        if need <= self.capacity:
            return
        new_cap = max(need, int(self.capacity * 1.5))
        for name, (dtype, fill) in _SCALARS.items():
            old = getattr(self, name)
            arr = np.full(new_cap, fill, dtype=dtype)
            arr[: self.n] = old[: self.n]
            setattr(self, name, arr)
        for name, (dtype, fill, width) in _MATRICES.items():
            old = getattr(self, name)
            arr = np.full((new_cap, width), fill, dtype=dtype)
            arr[: self.n] = old[: self.n]
            setattr(self, name, arr)
        self.capacity = new_cap

    def add_static(self, columns: dict[str, pa.Array]) -> None:
        """Append the pre-rendered static snapshot fields of newly created rows."""
        for name, arr in columns.items():
            self._static_chunks.setdefault(name, []).append(arr)
            self._static.pop(name, None)

    def static_column(self, name: str) -> pa.Array:
        """Pre-rendered text of a static snapshot field for every row (index = row)."""
        if name not in self._static:
            chunks = self._static_chunks[name]
            self._static[name] = pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
            self._static_chunks[name] = [self._static[name]]
        return self._static[name]

    @property
    def static_fields(self) -> tuple[str, ...]:
        return tuple(self._static_chunks)

    def active_mask(self) -> np.ndarray:
        """ACTIVE or SUSPENDED at the end of the current day."""
        return self.status[: self.n] != cat.ST_TERMINATED


class Numbering:
    """Own mobile numbers: fresh ones never used before, and numbers released by terminated
    subscriptions, offered again (oldest first) once ``quarantine`` days have passed.
    Ported-out numbers leave the operator and are never released."""

    def __init__(self, quarantine: int):
        self.quarantine = quarantine
        self._used: set[int] = set()
        self._released: list[tuple[int, int]] = []  # (number, release day), in release order
        self._next = 0

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out: list[int] = []
        while len(out) < n:
            k = (n - len(out)) * 2 + 8
            cand = rng.choice(cat.OWN_PREFIXES, k) * 10**8 + rng.integers(0, 10**8, k)
            for v in cand.tolist():
                if v not in self._used:
                    self._used.add(v)
                    out.append(v)
                    if len(out) == n:
                        break
        return np.array(out, dtype=np.int64)

    def release(self, numbers: np.ndarray, day: int) -> None:
        self._released.extend((int(v), int(day)) for v in numbers)

    def reusable(self, n: int, day: int) -> np.ndarray:
        """Up to ``n`` released numbers whose release is at least ``quarantine`` days old."""
        out: list[int] = []
        while len(out) < n and self._next < len(self._released):
            num, rel = self._released[self._next]
            if rel > day - self.quarantine:
                break
            out.append(num)
            self._next += 1
        return np.array(out, dtype=np.int64)


def random_offnet_numbers(ops: np.ndarray, city: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random number of the network ``ops`` (CMCC of another province, CUCC, CTCC, a fixed
    line in ``city``, international)."""
    n = len(ops)
    num = np.zeros(n, dtype=np.int64)
    suffix = rng.integers(0, 10**8, n)
    for op, prefixes in ((cat.OP_CMCC, cat.OWN_PREFIXES), (cat.OP_CUCC, cat.CUCC_PREFIXES),
                         (cat.OP_CTCC, cat.CTCC_PREFIXES), (cat.OP_ON_NET, cat.OWN_PREFIXES)):
        sel = ops == op
        if sel.any():
            num[sel] = rng.choice(prefixes, int(sel.sum())) * 10**8 + suffix[sel]
    sel = ops == cat.OP_FIXED
    if sel.any():
        num[sel] = cat.CITY_FIXED_BASE[city[sel]] + 20_000_000 + suffix[sel] % 70_000_000
    sel = ops == cat.OP_INTL
    if sel.any():
        cc = rng.choice(cat.INTL_CODES, int(sel.sum()))
        num[sel] = cc * 10**9 + suffix[sel] * 10 + 1
    return num


def _id_numbers(region: np.ndarray, birth_ymd: np.ndarray, male: np.ndarray,
                rng: np.random.Generator) -> pa.Array:
    """18-character resident id numbers with a valid GB 11643 check character."""
    seq = rng.integers(0, 500, len(region)) * 2 + male.astype(np.int64)
    body = region * 10**11 + birth_ymd * 10**3 + seq
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
    total = np.zeros(len(body), dtype=np.int64)
    rest = body.copy()
    for pos in range(16, -1, -1):
        total += (rest % 10) * weights[pos]
        rest //= 10
    check = lookup(tuple("10X98765432"), total % 11)
    return join_cols([int_str(body), check], "")


def _person_names(n: int, rng: np.random.Generator) -> pa.Array:
    """Chinese names for most persons (92%), pinyin for the rest."""
    sur = lookup(cat.SURNAMES, rng.integers(0, len(cat.SURNAMES), n))
    g1 = lookup(cat.GIVEN_CHARS, rng.integers(0, len(cat.GIVEN_CHARS), n))
    g2 = lookup(cat.GIVEN_CHARS + ("",) * 40, rng.integers(0, len(cat.GIVEN_CHARS) + 40, n))
    chinese = join_cols([sur, g1, g2], "")
    psur = lookup(cat.PINYIN_SURNAMES, rng.integers(0, len(cat.PINYIN_SURNAMES), n))
    pgiv = lookup(cat.PINYIN_GIVEN, rng.integers(0, len(cat.PINYIN_GIVEN), n))
    pinyin = join_cols([psur, pgiv], " ")
    use_pinyin = pa.array(rng.random(n) < 0.08)
    return pc.if_else(use_pinyin, pinyin, chinese)


def _company_names(city: np.ndarray, rng: np.random.Generator) -> pa.Array:
    n = len(city)
    return join_cols([
        lookup(cat.CITY_NAMES, city),
        lookup(cat.COMPANY_WORDS, rng.integers(0, len(cat.COMPANY_WORDS), n)),
        lookup(cat.COMPANY_TRADES, rng.integers(0, len(cat.COMPANY_TRADES), n)),
        lookup(cat.COMPANY_FORMS, rng.choice(3, n, p=[0.7, 0.2, 0.1])),
    ], "")


def _licences(region: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """18-character business licence numbers (unified social credit code layout)."""
    n = len(region)
    alnum = tuple("0123456789ABCDEFGHJKLMNPQRTUWXY")
    return join_cols([
        int_str(91 * 10**6 + region),
        pa.array(["MA"] * n, pa.string()),
        int_str(1_000_000 + rng.integers(0, 9_000_000, n)),
        lookup(alnum, rng.integers(0, len(alnum), n)),
    ], "")


class Spawner:
    """Creates new subscriptions (the opening base, historic lines and daily gross adds)."""

    def __init__(self, config: GeneratorConfig, cal: Calendar, numbering: Numbering):
        self.cfg = config
        self.cal = cal
        self.numbering = numbering
        nd = NormalDist()
        # postpaid when z + e > threshold, e ~ N(0, 0.8): P = postpaid_share
        share = min(max(config.postpaid_share, 1e-6), 1 - 1e-6)
        self._post_threshold = nd.inv_cdf(1 - share) * (1 + 0.8**2) ** 0.5

    def spawn(self, pop: Population, n: int, act_day: np.ndarray, rng: np.random.Generator, *,
              postpaid: np.ndarray | None = None, enterprise: np.ndarray | None = None,
              new_groups: bool = False, family_lines: bool = False,
              contact_pool: np.ndarray | None = None, reuse_numbers_at: int | None = None) -> np.ndarray:
        """Append ``n`` subscriptions activated on ``act_day``; return their row indices.

        ``enterprise`` flags lines that belong to a group: with ``new_groups`` they are split into
        new groups, otherwise they join existing groups (chosen by size). ``family_lines`` lets a
        person line share the previous line's customer (second lines of a household).
        """
        cfg = self.cfg
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        pop.reserve(n)
        idx = np.arange(pop.n, pop.n + n, dtype=np.int64)
        act_day = np.broadcast_to(np.asarray(act_day, dtype=np.int32), (n,)).copy()
        ent = np.zeros(n, dtype=bool) if enterprise is None else enterprise.astype(bool)

        # --- customers: companies own groups, persons own one or a few lines
        group = np.full(n, -1, dtype=np.int32)
        cust = np.empty(n, dtype=np.int64)
        ent_idx = np.flatnonzero(ent)
        if ent_idx.size:
            if new_groups or sum(pop.group_sizes) == 0:
                first_new = len(pop.group_sizes)
                remaining = ent_idx.size
                pos = 0
                while remaining > 0:
                    size = min(int(np.clip(rng.lognormal(np.log(18), 0.9), 3, 400)), remaining)
                    g = len(pop.group_sizes)
                    pop.group_customer.append(pop.n_customers)
                    pop.group_sizes.append(0)
                    pop.group_city.append(int(rng.choice(len(cat.CITIES), p=cat.CITY_P)))
                    pop.n_customers += 1
                    group[ent_idx[pos:pos + size]] = g
                    pos += size
                    remaining -= size
                cities = np.array(pop.group_city[first_new:], dtype=np.int64)
                pop.group_name.extend(_company_names(cities, rng).to_pylist())
                pop.group_licence.extend(_licences(cat.CITY_REGION[cities], rng).to_pylist())
            else:
                sizes_arr = np.array(pop.group_sizes, dtype=float)
                group[ent_idx] = rng.choice(len(sizes_arr), ent_idx.size, p=sizes_arr / sizes_arr.sum())
            for g in group[ent_idx].tolist():
                pop.group_sizes[g] += 1
            cust[ent_idx] = np.array(pop.group_customer, dtype=np.int64)[group[ent_idx]]

        per_idx = np.flatnonzero(~ent)
        share_prev = np.zeros(n, dtype=bool)
        if family_lines and per_idx.size > 1:
            share_prev[per_idx[1:]] = rng.random(per_idx.size - 1) < 0.12
            share_prev[per_idx[1:]] &= ~ent[per_idx[:-1]]
        new_cust = (~ent) & ~share_prev
        n_new_persons = int(new_cust.sum())
        person_seq = np.cumsum(new_cust) - 1  # local person index of each line
        cust[~ent] = pop.n_customers + person_seq[~ent]
        pop.n_customers += n_new_persons

        # person attributes (per person, then taken to lines)
        p_city = rng.choice(len(cat.CITIES), n_new_persons, p=cat.CITY_P)
        p_age = np.clip(rng.normal(38, 13, n_new_persons), 16, 85).astype(np.int16)
        p_male = rng.random(n_new_persons) < 0.52
        p_z = rng.normal(0, 1, n_new_persons)
        p_post = (p_z + rng.normal(0, 0.8, n_new_persons)) > self._post_threshold
        p_gender_known = rng.random(n_new_persons) > 0.03
        p_birth_known = rng.random(n_new_persons) > 0.04
        p_id_known = rng.random(n_new_persons) > 0.03
        year = self.cal.start.year
        p_birth_ymd = ((year - p_age.astype(np.int64)) * 10000 + rng.integers(1, 13, n_new_persons) * 100
                       + rng.integers(1, 29, n_new_persons))
        p_names = _person_names(n_new_persons, rng)
        p_ids = _id_numbers(cat.CITY_REGION[p_city], p_birth_ymd, p_male, rng)

        line_p = np.where(ent, 0, person_seq).astype(np.int64)
        city = np.empty(n, dtype=np.int8)
        age = np.zeros(n, dtype=np.int16)
        z = rng.normal(0, 1, n)
        is_post = np.empty(n, dtype=bool)
        pers = ~ent
        city[pers] = p_city[line_p[pers]]
        age[pers] = p_age[line_p[pers]]
        z[pers] = np.where(share_prev[pers], z[pers], p_z[line_p[pers]])
        is_post[pers] = p_post[line_p[pers]]
        if postpaid is not None:
            is_post[pers] = postpaid[pers]
        is_post[ent] = True
        if ent_idx.size:
            city[ent_idx] = np.array(pop.group_city, dtype=np.int8)[group[ent_idx]]
            age[ent_idx] = np.clip(rng.normal(40, 10, ent_idx.size), 20, 65).astype(np.int16)

        # --- value, product, usage
        spend = cfg.spend_median_fen * np.exp(cfg.spend_sigma * z)
        spend[ent] *= cfg.enterprise_spend_factor
        brand = np.where(ent, cat.BR_ENTERPRISE,
                         np.where(is_post, cat.BR_GOTONE, np.where(age < 30, cat.BR_MZONE, cat.BR_EASYOWN)))
        old = rng.random(n) < (0.02 + 0.22 * (age > 60))
        p5 = np.clip(0.35 + 0.12 * z - 0.012 * (age - 38) + 0.15 * ent, 0.05, 0.9)
        gen = np.where(old, np.where(rng.random(n) < 0.4, 2, 3),
                       np.where(rng.random(n) < p5, 5, 4)).astype(np.int8)
        family = np.where(ent, 2, np.where(is_post, 1, 0))
        gen = np.where((family == 2) & (gen < 4), 4, gen).astype(np.int8)
        gen = np.where((family == 1) & (gen < 3), 3, gen).astype(np.int8)
        plan = cat.choose_plans(family, gen, spend)

        def lognorm(sd):
            return np.exp(rng.normal(0, sd, n) - sd * sd / 2)

        i_voice = np.exp(0.35 * z + 0.4 * ent - 0.06) * lognorm(0.55)
        i_sms = np.exp(0.2 * z - 0.01 * (age - 38)) * lognorm(0.6)
        i_data = np.exp(0.35 * z + 0.35 * (gen == 5) - 0.6 * (gen <= 3) - 0.015 * (age - 38)) * lognorm(0.6)
        byte_scale = np.exp(0.3 * (gen == 5) - 0.8 * (gen <= 3)) * lognorm(0.5)

        tenure_new = np.clip(-act_day, 0, None) < 365
        risk = np.exp(rng.normal(0, 0.7, n) + 0.4 * tenure_new - 0.25 * z - 0.4 * ent + 0.25 * (age < 28))
        off_pref = rng.beta(2.5, 8.0, n)

        # --- numbers
        msisdn = np.zeros(n, dtype=np.int64)
        reassigned = np.zeros(n, dtype=bool)
        if reuse_numbers_at is not None and cfg.reassign_share > 0:
            want = int(rng.binomial(n, cfg.reassign_share))
            reused = self.numbering.reusable(want, reuse_numbers_at)
            if reused.size:
                pos = rng.choice(n, reused.size, replace=False)
                msisdn[pos] = reused
                reassigned[pos] = True
        fresh = ~reassigned
        msisdn[fresh] = self.numbering.fresh(int(fresh.sum()), rng)

        # --- write rows
        s = slice(pop.n, pop.n + n)
        pop.msisdn[s] = msisdn
        pop.customer[s] = cust
        pop.group[s] = group
        pop.payment[s] = np.where(is_post, cat.POSTPAID, cat.PREPAID)
        pop.brand[s] = brand
        pop.city[s] = city
        pop.channel[s] = rng.choice(len(cat.SALES_CHANNELS), n, p=cat.SALES_CHANNEL_P)
        pop.age[s] = age
        pop.act_day[s] = act_day
        pop.spend[s] = spend
        pop.i_voice[s] = i_voice
        pop.i_sms[s] = i_sms
        pop.i_data[s] = i_data
        pop.byte_scale[s] = byte_scale
        pop.risk[s] = risk
        pop.off_pref[s] = off_pref
        pop.plan[s] = plan
        pop.gen[s] = gen
        pop.status[s] = cat.ST_ACTIVE
        pop.status_day[s] = act_day
        pop.balance[s] = np.where(is_post, 0.0, rng.uniform(0.3, 1.5, n) * spend)
        pop.home_cell[s] = rng.integers(10000, 99000, n)
        pop.reassigned[s] = reassigned
        pop.sat_service[s] = rng.normal(7.3, 1.2, n)
        pop.sat_quality[s] = rng.normal(7.1, 1.2, n) - 1.2 * (gen <= 3) + 0.4 * (gen == 5)
        pop.sat_value[s] = rng.normal(6.9, 1.3, n) - 0.35 * np.clip(z, -2, 2)
        pop.n = pop.n + n

        # --- static snapshot text
        names = pa.nulls(n, pa.string()) if n_new_persons == 0 else p_names.take(pa.array(line_p))
        ids = pa.nulls(n, pa.string()) if n_new_persons == 0 else p_ids.take(pa.array(line_p))
        gender_known = np.zeros(n, dtype=bool)
        birth_known = np.zeros(n, dtype=bool)
        id_known = np.zeros(n, dtype=bool)
        male = np.zeros(n, dtype=bool)
        birth_year = np.zeros(n, dtype=np.int64)
        if n_new_persons:
            gender_known[pers] = p_gender_known[line_p[pers]]
            birth_known[pers] = p_birth_known[line_p[pers]]
            id_known[pers] = p_id_known[line_p[pers]]
            male[pers] = p_male[line_p[pers]]
            birth_year[pers] = p_birth_ymd[line_p[pers]] // 10000
        if ent_idx.size:
            ent_groups = pa.array(group[ent_idx].astype(np.int64))
            comp_names = pa.array(pop.group_name, pa.string()).take(ent_groups)
            comp_lic = pa.array(pop.group_licence, pa.string()).take(ent_groups)
            mask = pa.array(ent)
            names = pc.replace_with_mask(names, mask, comp_names)
            ids = pc.replace_with_mask(ids, mask, comp_lic)
            id_known[ent_idx] = True
        gender = lookup(("M", "F"), (~male).astype(np.int64), null_mask=~gender_known)
        if not id_known.all():
            ids = pc.if_else(pa.array(id_known), ids, pa.nulls(n, pa.string()))
        pop.add_static({
            "subscriber_id": int_str(idx, prefix="S", width=9),
            "msisdn": int_str(msisdn),
            "customer_id": int_str(cust, prefix="C", width=9),
            "account_id": int_str(cust, prefix="A", width=9),
            "group_id": int_str(group.astype(np.int64), prefix="G", width=6, null_mask=group < 0),
            "customer_name": names,
            "id_number": ids,
            "gender": gender,
            "birth_year": int_str(birth_year, null_mask=~birth_known),
            "city_code": lookup(cat.CITY_CODES, city),
            "brand": lookup(cat.BRANDS, brand),
            "channel": lookup(cat.SALES_CHANNELS, pop.channel[s]),
        })

        # --- calling circle
        self._contacts(pop, idx, ent, group, contact_pool if contact_pool is not None else idx, rng)
        return idx

    def _contacts(self, pop, idx, ent, group, pool, rng):
        n = idx.size
        k = rng.integers(5, K_CONTACTS + 1, n)
        slots = np.arange(K_CONTACTS)[None, :] < k[:, None]
        onnet = rng.random((n, K_CONTACTS)) < (1 - pop.off_pref[idx])[:, None]
        partner = pool[rng.integers(0, pool.size, (n, K_CONTACTS))]
        # colleagues: half of an enterprise line's on-net contacts are in its group
        if ent.any():
            grp_rows = np.flatnonzero(ent)
            members = {}
            g_all = pop.group[: pop.n]
            for g in np.unique(group[grp_rows]).tolist():
                members[g] = np.flatnonzero((g_all == g) & (pop.status[: pop.n] != cat.ST_TERMINATED))
            for r in grp_rows.tolist():
                m = members[int(group[r])]
                if m.size > 1:
                    take = rng.random(K_CONTACTS) < 0.5
                    partner[r, take] = m[rng.integers(0, m.size, int(take.sum()))]
        onnet &= partner != idx[:, None]
        ops = np.where(onnet, cat.OP_ON_NET, rng.choice(OFFNET_OPS, (n, K_CONTACTS), p=OFFNET_OPS_P))
        nums = random_offnet_numbers(ops.ravel(), np.repeat(pop.city[idx].astype(np.int64), K_CONTACTS),
                                     rng).reshape(n, K_CONTACTS)
        pop.c_sub[idx] = np.where(onnet & slots, partner, -1)
        pop.c_op[idx] = np.where(slots, ops, cat.OP_CUCC).astype(np.int8)
        pop.c_num[idx] = np.where(onnet, 0, nums)
        pop.n_contacts[idx] = k
