"""The day loop: lifecycle -> events -> accruals -> deliveries, and the ground-truth record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import catalog as cat
from . import events as ev
from .billing import Bill, MonthAccumulator, account_payments, build_bill, corrected_amounts
from .timeline import Calendar
from .config import GeneratorConfig
from .defects import DEFECT_FIELDS, REASONS, break_record, unknown_numbers
from .delivery import DeliveryFormat, DeliveryWriter, WrittenFile, locate, order_with_extras
from .lifecycle import Lifecycle
from .population import Numbering, Population, Spawner
from .render import as_binary, int_str, lookup, render_lines
from .schema import CDR_FEEDS, DAILY_FEEDS, load_feed_schemas

ID_FORMAT = {  # feed -> (prefix, digits of the daily sequence)
    "cdr_voice": ("V", 9), "cdr_sms": ("M", 9), "cdr_data": ("D", 9),
    "recharge": ("P", 8), "ticket": ("T", 7), "survey": ("Q", 7),
}
STREAMS = ("spawn", "life", "day", "cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket", "survey",
           "quirks", "defects", "format", "bill")
TRUTH_DIR = "_generator"


@dataclass
class Extra:
    lines: pa.Array
    kind: str  # late | duplicate | update | bad


class FeedTruth:
    """Ground-truth counters of one feed."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.empty_deliveries = 0
        self.files = 0
        self.lines = 0
        self.good_records = 0
        self.late = 0
        self.duplicates = 0
        self.updates = 0
        self.bad = {r: 0 for r in REASONS}
        self.encodings = {"UTF-8": 0, "GBK": 0}
        self.gzip_files = 0
        self.crlf_files = 0
        self.withheld_lines = 0  # written without a control file (config.withhold_control)

    def as_dict(self, feed: str) -> dict:
        bad = {r: v for r, v in self.bad.items() if r in DEFECT_FIELDS.get(feed, {})}
        return {
            "deliveries": self.deliveries,
            "empty_deliveries": self.empty_deliveries,
            "files": self.files,
            "lines_written": self.lines,
            "good_records": self.good_records,
            "late": self.late,
            "duplicates": self.duplicates,
            "updates": self.updates,
            "bad": bad,
            "bad_total": sum(self.bad.values()),
            "encodings": self.encodings,
            "gzip_files": self.gzip_files,
            "crlf_files": self.crlf_files,
            "withheld_lines": self.withheld_lines,
        }


class Generator:
    """Runs the simulation for ``config`` and writes the landing zone."""

    def __init__(self, config: GeneratorConfig, on_progress: Callable[[str], None] | None = None):
        self.cfg = config
        self.on_progress = on_progress
        self.schemas = load_feed_schemas(config.schema_dir)
        self.cal = Calendar(config.start, config.days, history_days=6000, horizon_days=500)
        seeds = np.random.SeedSequence(config.seed).spawn(len(STREAMS))
        self.rng = {name: np.random.default_rng(s) for name, s in zip(STREAMS, seeds)}
        self.numbering = Numbering(config.reassign_after_days)
        self.spawner = Spawner(config, self.cal, self.numbering)
        self.lifecycle = Lifecycle(config, self.cal, self.numbering, self.spawner)
        self.pop = Population(int(config.subscribers * 1.3) + 64)
        self.acc = MonthAccumulator()
        self.last = config.days - 1
        self.pending: dict[int, dict[str, list[Extra]]] = {}
        self.bills_due: dict[int, list[tuple[Bill, np.ndarray, str]]] = {}
        self.payments_due: dict[int, list[tuple[int, int, bool]]] = {}
        self.truth = {feed: FeedTruth() for feed in self.schemas}
        self.bad_records: list[dict] = []
        self.bill_truth: list[dict] = []
        self.correction_truth: dict | None = None
        self.terminations = {r: 0 for r in cat.TERMINATE_REASONS}
        self.gross_adds = 0
        self.guaranteed = self._guaranteed_defects()
        self.plan_lines = self._plan_lines()
        self.writer: DeliveryWriter | None = None

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        """Generate every business date, write truth.json, return the summary."""
        cfg = self.cfg
        t0 = time.perf_counter()
        base = self.lifecycle.initialise(self.pop, self.rng["spawn"])
        opening = int(base.size)
        self.writer = DeliveryWriter(cfg.landing, cfg.max_rows_per_file)
        try:
            self._loop(t0)
        finally:
            self.writer.close()
        seconds = time.perf_counter() - t0
        self._write_truth(opening)
        records = {feed: self.truth[feed].lines for feed in self.schemas}
        total = sum(records.values())
        return {
            "landing": str(cfg.landing),
            "records": records,
            "records_total": total,
            "files": sum(t.files for t in self.truth.values()),
            "seconds": round(seconds, 3),
            "records_per_second": round(total / seconds, 1) if seconds > 0 else None,
        }

    def _loop(self, t0: float) -> None:
        from crm_pipeline.progress import bar

        with bar(self.cfg.days, "generate", "days") as days:
            self._days(t0, days)

    def _days(self, t0: float, days) -> None:
        cfg, cal = self.cfg, self.cal
        month_lines = 0
        for t in range(cfg.days):
            lines_before = self._total_lines()
            if t == 0 or int(cal.day_of_month(t)) == 1:
                self.acc.start(self.pop, t, int(cal.month_key(t)))
            changes = self.lifecycle.step(self.pop, t, self.rng["life"])
            self.gross_adds += int(changes.added.size)
            for r in self.pop.reason[changes.terminated].tolist():
                self.terminations[cat.TERMINATE_REASONS[r]] += 1
            self._day(t, changes.terminated)
            self.writer.end_day()
            day_lines = self._total_lines() - lines_before
            month_lines += day_lines
            if self.on_progress is not None:
                elapsed = time.perf_counter() - t0
                rate = self._total_lines() / elapsed if elapsed > 0 else 0.0
                end_of_month = t == self.last or int(cal.day_of_month(t + 1)) == 1
                if cfg.progress == "day" or (cfg.progress == "month" and end_of_month):
                    span = day_lines if cfg.progress == "day" else month_lines
                    self.on_progress(
                        f"{cal.date(t).isoformat()}  active={int(self.pop.active_mask().sum()):,}  "
                        f"lines={span:,}  total={self._total_lines():,}  {rate:,.0f} lines/s")
                if end_of_month:
                    month_lines = 0
            days.set_postfix_str(f"{cal.date(t).isoformat()}, {self._total_lines():,} lines", refresh=False)
            days.update(1)

    def _total_lines(self) -> int:
        return sum(t.lines for t in self.truth.values())

    def _day(self, t: int, terminated_today: np.ndarray) -> None:
        cfg, cal, pop = self.cfg, self.cal, self.pop
        ymd = int(cal.ymd(t))
        dim = int(cal.days_in_month(t))
        day = ev.build_day(pop, t, ymd, dim, int(cal.weekday(t)), self.rng["day"])

        batches = {
            "cdr_voice": ev.voice(pop, day, cfg, self.rng["cdr_voice"]),
            "cdr_sms": ev.sms(pop, day, cfg, self.rng["cdr_sms"]),
            "cdr_data": ev.data(pop, day, cfg, self.rng["cdr_data"]),
        }
        spent = np.zeros(pop.n)
        for feed, item in (("cdr_voice", "VOICE"), ("cdr_sms", "SMS"), ("cdr_data", "DATA")):
            b = batches[feed]
            self.acc.add_usage(pop, item, b.owner, b.charge)
            if b.n:
                spent += np.bincount(b.owner, weights=b.charge, minlength=pop.n)
        pre = day.active[pop.payment[day.active] == cat.PREPAID]
        pop.balance[pre] -= cat.PLAN_FEE[pop.plan[pre]] / dim + spent[pre]
        payments = self._payments_today(t, day.active)
        batches["recharge"] = ev.recharges(pop, day, cfg, payments, self.rng["recharge"])
        batches["ticket"] = ev.tickets(pop, day, cfg, cal.ymd, self.rng["ticket"])
        batches["survey"] = ev.surveys(pop, day, cfg, self.rng["survey"])
        self.acc.add_day(pop, np.concatenate([day.active, terminated_today]), dim,
                         day.active[day.roaming])

        fmt_rng = self.rng["format"]
        for feed in DAILY_FEEDS:
            fmt = self._format(feed, fmt_rng)
            if feed == "subscriber":
                self._write(feed, t, ymd, self._subscriber_lines(t), fmt)
            elif feed == "plan":
                self._write(feed, t, ymd, self.plan_lines, fmt)
            else:
                self._deliver_events(feed, t, ymd, batches[feed], fmt)

        for bill, amounts, kind in self.bills_due.pop(t, []):
            lines = render_lines(self.schemas["bill"].fields, bill.columns(amounts))
            fmt = self._format("bill", fmt_rng)
            self._write("bill", t, ymd, lines, fmt)
            tr = self.truth["bill"]
            if kind == "bill":
                tr.good_records += len(lines)
            else:
                tr.updates += len(lines)

        if int(cal.day_of_month(t + 1)) == 1:
            self._close_month(t)

    # ------------------------------------------------------------------ formats
    def _format(self, feed: str, rng: np.random.Generator) -> DeliveryFormat:
        cfg = self.cfg
        u = rng.random(3)
        gbk = feed in ("subscriber", "plan") and u[0] < cfg.gbk_share
        gz_share = cfg.cdr_gzip_share if feed in CDR_FEEDS else cfg.other_gzip_share
        return DeliveryFormat("GBK" if gbk else "UTF-8", bool(u[1] < gz_share), bool(u[2] < cfg.crlf_share))

    def _write(self, feed: str, t: int, ymd: int, lines: pa.Array, fmt: DeliveryFormat) -> list[WrittenFile]:
        withheld = feed in self.cfg.withhold_control and t == self.cfg.days - 1
        files = self.writer.write(feed, ymd, lines, fmt, control=not withheld)
        tr = self.truth[feed]
        tr.withheld_lines += len(lines) if withheld else 0
        tr.deliveries += 1
        tr.empty_deliveries += int(len(lines) == 0)
        tr.files += len(files)
        tr.lines += len(lines)
        tr.encodings[fmt.encoding] += len(files)
        tr.gzip_files += sum(1 for f in files if f.name.endswith(".gz"))
        tr.crlf_files += len(files) if fmt.crlf and len(lines) else 0
        if feed in ("subscriber", "plan"):
            tr.good_records += len(lines)
        return files

    # ------------------------------------------------------------------ snapshots
    def _plan_lines(self) -> pa.Array:
        plans = cat.PLANS
        n = len(plans)
        cols = {
            "plan_id": pa.array([p.plan_id for p in plans]),
            "plan_name": pa.array([p.plan_name for p in plans]),
            "payment_type": pa.array([p.payment_type for p in plans]),
            "monthly_fee_fen": int_str(np.array([p.monthly_fee_fen for p in plans])),
            "included_voice_min": int_str(np.array([p.included_voice_min for p in plans])),
            "included_sms": int_str(np.array([p.included_sms for p in plans])),
            "included_data_mb": int_str(np.array([p.included_data_mb for p in plans])),
            "network_gen": lookup(cat.NETWORK_GENS, np.array([p.gen - 2 for p in plans])),
        }
        assert all(len(c) == n for c in cols.values())
        return render_lines(self.schemas["plan"].fields, cols)

    def _subscriber_lines(self, t: int) -> pa.Array:
        pop, cal = self.pop, self.cal
        n = pop.n
        cutoff = cal.months_back(t, 13)
        status = pop.status[:n]
        rows = np.flatnonzero((status != cat.ST_TERMINATED) | (pop.status_day[:n] >= cutoff))
        take = pa.array(rows)
        cols: dict[str, object] = {name: pop.static_column(name).take(take) for name in pop.static_fields}
        reason = pop.reason[rows].astype(np.int64)
        cols.update({
            "plan_id": lookup(cat.PLAN_IDS, pop.plan[rows]),
            "payment_type": lookup(cat.PAYMENT_TYPES, pop.payment[rows]),
            "network_gen": lookup(cat.NETWORK_GENS, pop.gen[rows].astype(np.int64) - 2),
            "activation_date": int_str(cal.ymd(pop.act_day[rows])),
            "status": lookup(cat.STATUSES, status[rows]),
            "status_date": int_str(cal.ymd(pop.status_day[rows])),
            "terminate_reason": lookup(cat.TERMINATE_REASONS, np.maximum(reason, 0), null_mask=reason < 0),
        })
        return render_lines(self.schemas["subscriber"].fields, cols)

    # ------------------------------------------------------------------ event feeds
    def _deliver_events(self, feed: str, t: int, ymd: int, batch: ev.EventBatch, fmt: DeliveryFormat) -> None:
        cfg = self.cfg
        schema = self.schemas[feed]
        q = self.rng["quirks"]
        tr = self.truth[feed]
        lines = render_lines(schema.fields, batch.cols)
        n = len(lines)
        tr.good_records += n
        today = np.ones(n, dtype=bool)

        if feed in CDR_FEEDS and n:
            late = q.random(n) < cfg.late_rate
            target = np.minimum(t + q.integers(1, 4, n), self.last)
            late &= target > t
            today = ~late
            late_idx = np.flatnonzero(late)
            tr.late += int(late_idx.size)
            for d in np.unique(target[late_idx]).tolist():
                sel = late_idx[target[late_idx] == d]
                self._pend(d, feed, Extra(lines.take(pa.array(sel)), "late"))
        if feed == "ticket" and n:
            resolve = batch.extra["resolve_day"]
            open_lines = render_lines(schema.fields, batch.extra["open_cols"])
            resolved_today = pa.array(resolve == t)
            later = np.flatnonzero((resolve > t) & (resolve <= self.last))
            for d in np.unique(resolve[later]).tolist():
                sel = later[resolve[later] == d]
                self._pend(int(d), feed, Extra(lines.take(pa.array(sel)), "update"))
                tr.updates += int(sel.size)
            lines = pc.if_else(resolved_today, lines, open_lines)

        main_idx = np.flatnonzero(today)
        main = lines.take(pa.array(main_idx)) if main_idx.size < n else lines
        owners = batch.owner[main_idx]
        waiting = self.pending.get(t)
        extras = waiting.pop(feed, []) if waiting else []
        if waiting is not None and not waiting:
            del self.pending[t]

        k = int(q.binomial(main_idx.size, cfg.dup_rate)) if main_idx.size else 0
        if k:
            pick = np.sort(q.choice(main_idx.size, k, replace=False))
            same_only = feed in ("ticket", "survey") or t == self.last
            later = (~np.full(k, same_only)) & (q.random(k) >= 0.6)
            day_of = np.where(later, np.minimum(t + q.integers(1, 4, k), self.last), t)
            for d in np.unique(day_of).tolist():
                sel = pick[day_of == d]
                extra = Extra(main.take(pa.array(sel)), "duplicate")
                if d == t:
                    extras.append(extra)
                else:
                    self._pend(int(d), feed, extra)
            tr.duplicates += k

        bad_lines, bad_meta = self._plant_defects(feed, t, ymd, main, owners, batch.n)
        if bad_lines:
            extras.append(Extra(pa.array(bad_lines, pa.large_binary()), "bad"))

        n_main = len(main)
        n_extra = sum(len(e.lines) for e in extras)
        if n_extra:
            order = order_with_extras(n_main, n_extra, q)
            combined = pa.concat_arrays([as_binary(main)] + [as_binary(e.lines) for e in extras])
            out = combined.take(pa.array(order))
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
        else:
            out = main
            inverse = None
        files = self._write(feed, t, ymd, out, fmt)
        if bad_meta:
            first_bad = n_main + n_extra - len(bad_lines)
            for j, meta in enumerate(bad_meta):
                name, line_no = locate(files, int(inverse[first_bad + j]))
                meta.update(file=f"{feed}/{ymd}/{name}", line=line_no)
                self.bad_records.append(meta)

    def _pend(self, day: int, feed: str, extra: Extra) -> None:
        self.pending.setdefault(day, {}).setdefault(feed, []).append(extra)

    # ------------------------------------------------------------------ bad records
    def _guaranteed_defects(self) -> dict[tuple[str, int], list[str]]:
        """At least one bad record of every reason per data set (when days >= 3): each reason is
        assigned to a CDR feed supporting it and a day in 1..days-2."""
        out: dict[tuple[str, int], list[str]] = {}
        if self.cfg.days < 3:
            return out
        rng = self.rng["defects"]
        for reason in REASONS:
            feeds = [f for f in CDR_FEEDS if reason in DEFECT_FIELDS[f]]
            feed = feeds[int(rng.integers(0, len(feeds)))]
            day = int(rng.integers(1, self.cfg.days - 1))
            out.setdefault((feed, day), []).append(reason)
        return out

    def _plant_defects(self, feed: str, t: int, ymd: int, main: pa.Array, owners: np.ndarray,
                       n_batch: int) -> tuple[list[bytes], list[dict]]:
        cfg = self.cfg
        n = len(main)
        if n == 0:
            return [], []
        rng = self.rng["defects"]
        supported = [r for r in REASONS if r in DEFECT_FIELDS[feed]]
        reasons = list(self.guaranteed.get((feed, t), []))
        k = int(rng.binomial(n, cfg.bad_rate))
        reasons += [supported[int(i)] for i in rng.integers(0, len(supported), k)]
        prefix, digits = ID_FORMAT[feed]
        fields = self.schemas[feed].fields
        pop = self.pop
        out: list[bytes] = []
        meta: list[dict] = []
        for j, reason in enumerate(reasons):
            shifted = None
            unknown = None
            candidates = None
            if reason == "outside_window":
                past_ok = t - 4 >= 0
                future_ok = t + 1 <= self.last
                if not (past_ok or future_ok):
                    reason = "bad_timestamp" if "bad_timestamp" in supported else "field_count"
                else:
                    if past_ok and (not future_ok or rng.random() < 0.5):
                        e = t - int(rng.integers(4, min(10, t) + 1))
                        candidates = np.flatnonzero(pop.act_day[owners] <= e)
                    else:
                        e = t + 1
                        candidates = np.flatnonzero(pop.t_term[owners] > t + 1)
                    shifted = int(self.cal.ymd(e))
            if reason == "unknown_subscriber":
                unknown = int(unknown_numbers(1, rng)[0])
            if candidates is not None and candidates.size == 0:
                reason, shifted, candidates = "field_count", None, None
            pool_size = n if candidates is None else candidates.size
            pick = int(rng.integers(0, pool_size))
            row = pick if candidates is None else int(candidates[pick])
            template = main[row].as_py()
            if isinstance(template, bytes):
                template = template.decode("utf-8")
            new_id = f"{prefix}{ymd}{n_batch + j:0{digits}d}"
            out.append(break_record(feed, reason, fields, template, new_id, rng,
                                    shifted_ymd=shifted, unknown_number=unknown))
            meta.append({"feed": feed, "business_date": str(ymd), "reason": reason,
                         "field": DEFECT_FIELDS[feed][reason], "id": new_id})
            self.truth[feed].bad[reason] += 1
        return out, meta

    # ------------------------------------------------------------------ money
    def _payments_today(self, t: int, active: np.ndarray) -> list[tuple[int, int, bool]]:
        due = self.payments_due.pop(t, [])
        if not due:
            return []
        accounts = np.array([d[0] for d in due], dtype=np.int64)
        cust = self.pop.customer[active]
        hit = np.isin(cust, accounts)
        rows = active[hit]
        acc_of_row = cust[hit]
        uniq, first = np.unique(acc_of_row, return_index=True)
        payer = dict(zip(uniq.tolist(), rows[first].tolist()))
        return [(payer[a], amt, auto) for a, amt, auto in due if a in payer]

    def _close_month(self, t: int) -> None:
        """End of day ``t`` closes a month: bill it when the whole month is in the range."""
        cal, cfg = self.cal, self.cfg
        first = self.acc.first_day
        if int(cal.day_of_month(first)) != 1 or int(cal.day_of_month(t + 1)) != 1:
            return  # the month did not start, or does not end, inside the generated range
        next_first = t + 1
        nd = cal.date(next_first)
        run_t = cal.offset(date(nd.year, nd.month, cfg.bill_run_day))
        if run_t > self.last:
            return
        due_t = cal.offset(date(nd.year, nd.month, 20)) if cfg.bill_run_day < 20 else run_t + 15
        bill = build_bill(self.pop, self.acc, t, int(cal.ymd(t)), int(cal.ymd(run_t)), int(cal.ymd(due_t)),
                          self.rng["bill"])
        self.bills_due.setdefault(run_t, []).append((bill, bill.amount, "bill"))
        self.bill_truth.append({
            "bill_month": str(bill.month_key), "delivered": str(int(cal.ymd(run_t))),
            "lines": int(bill.line_id.size), "subscriptions": int(np.unique(bill.row).size),
            "revenue_fen": int(bill.amount.sum()),
        })
        for pay_day, account, amount, auto in account_payments(self.pop, bill, run_t, self.rng["bill"]):
            if pay_day <= self.last:
                self.payments_due.setdefault(pay_day, []).append((account, amount, auto))
        corr_t = cal.offset(date(nd.year, nd.month, cfg.bill_correction_day))
        if self.correction_truth is None and run_t < corr_t <= self.last:
            amounts, changed = corrected_amounts(bill, self.rng["bill"])
            self.bills_due.setdefault(corr_t, []).append((bill, amounts, "correction"))
            self.correction_truth = {
                "bill_month": str(bill.month_key), "delivered": str(int(cal.ymd(corr_t))),
                "lines": int(bill.line_id.size),
                "changed": [{"bill_line_id": f"B{bill.month_key * 10**9 + int(bill.line_id[i])}",
                             "old_amount_fen": int(bill.amount[i]), "new_amount_fen": int(amounts[i])}
                            for i in changed.tolist()],
            }

    # ------------------------------------------------------------------ truth
    def _write_truth(self, opening: int) -> None:
        cfg, pop = self.cfg, self.pop
        reassigned = int(pop.reassigned[: pop.n].sum())
        doc = {
            "generator": "crm_pipeline.generate",
            "first_business_date": cfg.start.isoformat(),
            "last_business_date": self.cal.date(self.last).isoformat(),
            "config": cfg.content_options(),
            "reason_codes": list(REASONS),
            "feeds": {feed: self.truth[feed].as_dict(feed) for feed in self.schemas},
            "bad_records": self.bad_records,
            "bills": self.bill_truth,
            "bill_correction": self.correction_truth,
            "population": {
                "opening_subscribers": opening,
                "gross_adds": self.gross_adds,
                "terminations": self.terminations,
                "reassigned_numbers": reassigned,
                "enterprise_groups": int(sum(1 for s in pop.group_sizes if s > 0)),
                "subscriptions_total": int(pop.n),
                "active_at_end": int(pop.active_mask().sum()),
            },
        }
        folder = cfg.landing / TRUTH_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "truth.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
