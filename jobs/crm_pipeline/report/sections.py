"""The report's sections: for each, a title, one or two sentences that say what the numbers mean,
Plotly charts with titles, axis labels and units, and tables. Money is shown in CNY (the lake
keeps fen). A section whose data does not exist yet (no churn model before five complete months,
no survey period closed) says why instead of drawing an empty chart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from crm_pipeline.months import add_months
from crm_pipeline.report.data import ReportData

SEGMENTS = ("VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE")
SEGMENT_COLOURS = {"VALUABLE": "#1b9e77", "SUB_VALUABLE": "#7570b3", "POTENTIAL": "#d95f02",
                   "LOW_VALUE": "#a6a6a6", "NEW": "#66a61e", "UNKNOWN": "#cccccc", "CHURNED": "#e7298a"}
#: the dimensions of crm.kpi_month the trend charts offer, in menu order
DIMENSIONS = ("value_segment", "payment_type", "brand", "city_code", "network_gen", "plan_id")
#: rows the tables of long lists show (the warehouse holds them all)
TOP = 15


@dataclass
class Section:
    id: str  # the stable element id of the section
    title: str
    lead: str  # what the numbers say, in a sentence or two
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, frame)
    cards: list[tuple[str, str, str]] = field(default_factory=list)  # (label, value, change)
    empty: str | None = None  # why there is nothing to draw yet


SECTION_IDS = ("headline", "value-matrix", "segments", "segment-migration", "concentration", "trends", "clv",
               "churn-model", "key-accounts", "watchlist", "lost-customers", "next-generation", "satisfaction",
               "data-quality")


# ----------------------------------------------------------------------------------------------- helpers

def cny(fen) -> str:
    """Fen as CNY with thousands separators, to the fen below 10,000 CNY, whole above:
    123456 -> '1,234.56 CNY', 123456789 -> '1,234,568 CNY'; '-' when unknown."""
    if _missing(fen):
        return "-"
    amount = float(fen) / 100
    return f"{amount:,.2f} CNY" if abs(amount) < 10000 else f"{amount:,.0f} CNY"


def pct(share, digits: int = 1) -> str:
    return "-" if _missing(share) else f"{100 * float(share):.{digits}f} %"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _change(now, before, kind: str) -> str:
    """Month-on-month change: relative for amounts, in percentage points for rates."""
    if _missing(now) or _missing(before):
        return "no previous month"
    if kind == "rate":
        points = 100 * (float(now) - float(before))
        return f"{points:+.2f} pp on last month"
    if float(before) == 0:
        return "no previous value"
    return f"{100 * (float(now) / float(before) - 1):+.1f} % on last month"


def _figure(title: str, x_title: str, y_title: str, height: int = 380) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height)
    return fig


def _month_label(m) -> str:
    return f"{m:%Y-%m}"


def _all(kpi: pd.DataFrame) -> pd.DataFrame:
    return kpi[kpi["dimension"] == "ALL"].sort_values("month").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- sections

def headline(d: ReportData) -> Section:
    rows = _all(d.kpi_trend)
    now = rows[rows["month"] == d.month].iloc[0]
    prior = rows[rows["month"] == add_months(d.month, -1)]
    before = prior.iloc[0] if len(prior) else None

    def was(col):
        return None if before is None else before[col]

    cards = [
        ("Active subscribers", f"{int(now['active_subscribers']):,}", _change(now["active_subscribers"],
                                                                            was("active_subscribers"), "amount")),
        ("Revenue", cny(now["revenue_fen"]), _change(now["revenue_fen"], was("revenue_fen"), "amount")),
        ("ARPU", cny(now["arpu_fen"]), _change(now["arpu_fen"], was("arpu_fen"), "amount")),
        ("Churn rate", pct(now["churn_rate"], 2), _change(now["churn_rate"], was("churn_rate"), "rate")),
    ]
    labels = [_month_label(m) for m in rows["month"]]
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "Active subscribers", "Revenue (CNY)", "ARPU (CNY per subscriber)", "Churn rate (% of opening subscribers)"),
        vertical_spacing=0.16)
    series = [(rows["active_subscribers"], 1, 1), (rows["revenue_fen"] / 100, 1, 2), (rows["arpu_fen"] / 100, 2, 1),
              (100 * rows["churn_rate"], 2, 2)]
    for values, r, c in series:
        fig.add_trace(go.Scatter(x=labels, y=values, mode="lines+markers", showlegend=False,
                                 line={"color": "#2c7fb8"}), row=r, col=c)
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="month", row=2)
    fig.update_layout(title=f"The last {len(rows)} month(s)", height=520)
    lead = (f"{d.month:%B %Y}: {int(now['active_subscribers']):,} active subscribers "
            f"({int(now['gross_adds']):,} added, {int(now['churned_subscribers']):,} churned), "
            f"revenue {cny(now['revenue_fen'])}, ARPU {cny(now['arpu_fen'])}.")
    return Section("headline", "Headline KPIs", lead, [fig], cards=cards)


def value_matrix(d: ReportData) -> Section:
    from crm_pipeline.pipeline.settings import analytics_settings

    value = analytics_settings().value
    subs = d.subscribers.dropna(subset=["current_value_index", "potential_value_index"])
    shown = _sample(subs, 3000)
    fig = _figure(f"Current against potential value, {d.month:%Y-%m}"
                  + (f" ({len(shown):,} of {len(subs):,} subscribers)" if len(shown) < len(subs) else ""),
                  "current value index (0-100)", "potential value index (0-100)", height=520)
    for seg in SEGMENTS:
        part = shown[shown["value_segment"] == seg]
        fig.add_trace(go.Scatter(
            x=part["current_value_index"], y=part["potential_value_index"], mode="markers", name=seg,
            marker={"color": SEGMENT_COLOURS[seg], "size": 5, "opacity": 0.6},
            hovertemplate="current %{x:.1f}<br>potential %{y:.1f}<extra>" + seg + "</extra>"))
    fig.add_vline(x=value.high_current_from, line_dash="dash", line_color="#444",
                  annotation_text=f"high current from {value.high_current_from:g}")
    fig.add_hline(y=value.high_potential_from, line_dash="dash", line_color="#444",
                  annotation_text=f"high potential from {value.high_potential_from:g}")
    fig.update_xaxes(range=[0, 100])
    fig.update_yaxes(range=[0, 100])
    counts = subs["value_segment"].value_counts()
    lead = (f"Each subscriber scores 0-100 on what they bring now (current value) and what they could bring "
            f"(potential value), on fixed reference points (docs/value.md). High starts at "
            f"{value.high_current_from:g} (current) and {value.high_potential_from:g} (potential): "
            + ", ".join(f"{seg} {int(counts.get(seg, 0)):,}" for seg in SEGMENTS) + ".")
    return Section("value-matrix", "Value matrix", lead, [fig])


def _sample(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most n rows, the same ones on every run (every k-th subscriber by id)."""
    if len(df) <= n:
        return df
    step = math.ceil(len(df) / n)
    return df.sort_values("subscriber_id").iloc[::step]


def segments(d: ReportData) -> Section:
    seg = d.segments[d.segments["month"] == d.month].set_index("value_segment").reindex(list(SEGMENTS))
    total = seg["subscribers"].sum()
    fig = _figure(f"Share of subscribers and of revenue by segment, {d.month:%Y-%m}", "value segment",
                  "share (%)")
    fig.add_trace(go.Bar(x=list(SEGMENTS), y=100 * seg["subscribers"] / total if total else None,
                         name="subscribers", marker_color="#9ecae1"))
    fig.add_trace(go.Bar(x=list(SEGMENTS), y=100 * seg["revenue_share"], name="revenue", marker_color="#08519c"))
    fig.update_layout(barmode="group")
    table = pd.DataFrame({
        "segment": list(SEGMENTS),
        "subscribers": [f"{int(v):,}" for v in seg["subscribers"]],
        "revenue share": [pct(v) for v in seg["revenue_share"]],
        "ARPU": [cny(v) for v in seg["arpu_fen"]],
        "mean CLV": [cny(v) for v in seg["avg_clv_fen"]],
        "mean churn score": ["-" if _missing(v) else f"{v:.3f}" for v in seg["avg_churn_score"]],
        "recommended strategy": list(seg["recommended_strategy"]),
    })
    top = seg["revenue_share"].idxmax() if seg["revenue_share"].notna().any() else None
    lead = ("Four segments from the value matrix, each with its strategy."
            + (f" {top} subscribers are {pct(seg.loc[top, 'subscribers'] / total)} of the base and bring "
               f"{pct(seg.loc[top, 'revenue_share'])} of revenue." if top and total else ""))
    return Section("segments", "Value segments and strategies", lead, [fig],
                   tables=[("Segments this month", table)])


def segment_migration(d: ReportData) -> Section:
    mig = d.segment_migration
    if mig.empty:
        return Section("segment-migration", "Segment migration", "", empty="no migration rows for this month")
    sources = [s for s in ("NEW", "UNKNOWN", *SEGMENTS) if s in set(mig["from_segment"])]
    targets = [s for s in (*SEGMENTS, "CHURNED") if s in set(mig["to_segment"])]
    grid = mig.pivot_table(index="from_segment", columns="to_segment", values="subscribers", aggfunc="sum",
                           fill_value=0).reindex(index=sources, columns=targets, fill_value=0)
    fig = _figure(f"Where last month's subscribers are now, {d.month:%Y-%m} (subscribers)",
                  "segment this month (or CHURNED)", "segment last month (NEW: added this month)", height=420)
    fig.add_trace(go.Heatmap(z=grid.values, x=targets, y=sources, colorscale="Blues", text=grid.values,
                             texttemplate="%{text:,}", colorbar={"title": "subscribers"},
                             hovertemplate="%{y} -> %{x}: %{z:,}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    known = mig[mig["from_segment"].isin(SEGMENTS) & mig["to_segment"].isin(SEGMENTS)]
    moved = known[known["from_segment"] != known["to_segment"]]["subscribers"].sum()
    stayed = known["subscribers"].sum()
    up = known[known.apply(lambda r: _rank(r["to_segment"]) < _rank(r["from_segment"]), axis=1)]["subscribers"].sum() \
        if len(known) else 0
    lead = (f"Of {int(stayed):,} subscribers in a segment both months, {int(moved):,} changed segment "
            f"({int(up):,} towards VALUABLE)." if stayed else
            "No subscriber has a segment in the month before (the first month of data).")
    return Section("segment-migration", "Segment migration", lead, [fig])


def _rank(segment: str) -> int:
    return SEGMENTS.index(segment)


def concentration(d: ReportData) -> Section:
    conc = d.concentration_trend.sort_values("month")
    now = conc[conc["month"] == d.month]
    lorenz = d.lorenz.sort_values("point")
    if now.empty or lorenz.empty:
        return Section("concentration", "Revenue concentration", "", empty="no concentration rows for this month")
    row = now.iloc[0]
    fig = _figure(f"Lorenz curve of revenue, {d.month:%Y-%m}", "share of subscribers, lowest revenue first (%)",
                  "share of revenue (%)", height=460)
    fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", name="equal revenue",
                             line={"dash": "dot", "color": "#999"}))
    fig.add_trace(go.Scatter(x=100 * lorenz["population_share"], y=100 * lorenz["revenue_share"], mode="lines",
                             name="revenue", fill="tonexty", line={"color": "#08519c"}))
    fig.add_vline(x=80, line_dash="dash", line_color="#d95f02",
                  annotation_text=f"top 20 %: {pct(row['top20_revenue_share'])} of revenue")
    fig.update_xaxes(range=[0, 100])
    fig.update_yaxes(range=[0, 100])
    lead = (f"The top 20 % of subscribers by revenue bring {pct(row['top20_revenue_share'])} of it; "
            f"Gini {row['gini']:.3f} (0: everyone pays the same; 1: one subscriber pays all)."
            + (f" Last month: {pct(conc.iloc[-2]['top20_revenue_share'])}, Gini {conc.iloc[-2]['gini']:.3f}."
               if len(conc) > 1 and conc.iloc[-2]["month"] == add_months(d.month, -1) else ""))
    return Section("concentration", "Revenue concentration", lead, [fig])


def trends(d: ReportData) -> Section:
    kpi = d.kpi_trend
    dims = [dim for dim in DIMENSIONS if dim in set(kpi["dimension"])]
    figs = [_dimension_chart(kpi, dims, "arpu_fen", "ARPU by {dim} (CNY per subscriber)", "ARPU (CNY)", 0.01),
            _dimension_chart(kpi, dims, "churn_rate", "Churn rate by {dim} (% of opening subscribers)",
                             "churn rate (%)", 100)]
    lead = ("ARPU and churn rate per month for each value of a dimension; pick the dimension in the menu "
            "(ARPU: revenue over the mean of opening and closing subscribers; churn: churned over opening).")
    return Section("trends", "ARPU and churn trends by dimension", lead, figs)


def _dimension_chart(kpi: pd.DataFrame, dims: list[str], column: str, title: str, y_title: str,
                     scale: float) -> go.Figure:
    fig = _figure(title.format(dim=dims[0]), "month", y_title, height=420)
    owner = []  # the dimension of each trace, in order
    for dim in dims:
        part = kpi[kpi["dimension"] == dim].sort_values("month")
        for value, rows in part.groupby("dimension_value", sort=True):
            fig.add_trace(go.Scatter(x=[_month_label(m) for m in rows["month"]], y=rows[column] * scale,
                                     mode="lines+markers", name=str(value), visible=dim == dims[0]))
            owner.append(dim)
    buttons = [{"label": dim, "method": "update",
                "args": [{"visible": [o == dim for o in owner]}, {"title": title.format(dim=dim)}]} for dim in dims]
    fig.update_layout(updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right",
                                    "y": 1.18, "yanchor": "top"}])
    fig.update_xaxes(type="category")
    return fig


def clv(d: ReportData) -> Section:
    subs = d.subscribers.dropna(subset=["clv_fen"])
    if subs.empty:
        return Section("clv", "Customer lifetime value by cohort group", "",
                       empty="no CLV for this month: the first month of data has no churn history to fit")
    subs = subs.assign(cohort_group=subs["payment_type"] + " | " + subs["value_segment"])
    groups = subs.groupby("cohort_group").agg(subscribers=("clv_fen", "size"), mean_clv=("clv_fen", "mean"),
                                              total_clv=("clv_fen", "sum")).reset_index()
    groups = groups.sort_values("mean_clv", ascending=False)
    fig = _figure(f"Mean lifetime value per subscriber by cohort group, {d.month:%Y-%m}",
                  "cohort group (payment type | value segment)", "mean CLV (CNY)", height=420)
    fig.add_trace(go.Bar(x=groups["cohort_group"], y=groups["mean_clv"] / 100, marker_color="#31a354",
                         customdata=groups["subscribers"],
                         hovertemplate="%{x}<br>%{y:,.0f} CNY, %{customdata:,} subscribers<extra></extra>"))
    model = d.clv_model
    table = pd.DataFrame({
        "cohort group": model["cohort_group"],
        "fit": model["fit_level"].fillna("-"),
        "mean monthly churn": [pct(a / (a + b), 2) if not (_missing(a) or _missing(b)) else "-"
                               for a, b in zip(model["alpha"], model["beta"])],
        "alpha": [_num(v, 3) for v in model["alpha"]],
        "beta": [_num(v, 3) for v in model["beta"]],
        "exposures": [_num(v, 0) for v in model["exposures"]],
        "churned": [_num(v, 0) for v in model["churned"]],
    }) if not model.empty else pd.DataFrame()
    lead = (f"Expected discounted margin of the subscriber's remaining life (shifted-beta-geometric retention "
            f"per cohort group, docs/value.md): {cny(subs['clv_fen'].sum())} over {len(subs):,} subscribers, "
            f"{cny(subs['clv_fen'].mean())} each on average.")
    return Section("clv", "Customer lifetime value by cohort group", lead, [fig],
                   tables=[("Retention fit per cohort group: churn probabilities vary across subscribers as "
                            "Beta(alpha, beta), with mean alpha / (alpha + beta); very large alpha and beta mean "
                            "the group's churn is nearly the same for everyone", table)] if not table.empty else [])


def _num(v, digits: int) -> str:
    return "-" if _missing(v) else f"{float(v):,.{digits}f}"


def churn_model(d: ReportData) -> Section:
    title = "Churn model: gains, calibration and drift"
    version = d.scoring_model
    if version is None or d.models.empty:
        return Section("churn-model", title, "", empty=(
            "no churn model scored this month yet: the first is trained once two months are labelled for "
            "training and a later one for testing (a month is labelled when the two months after it are "
            "complete)"))
    card = d.models[d.models["model_version"] == version].iloc[0]
    trained = [m.strip()[:7] for m in str(card["train_months"]).split(",") if m.strip()]
    cards = [("Model", str(version), f"{card['algorithm']}, trained on {trained[0]} to {trained[-1]}"
              if trained else str(card["algorithm"])),
             ("AUC (test month)", f"{card['auc']:.3f}", f"baseline {card['baseline_auc']:.3f}"
              if not _missing(card.get("baseline_auc")) else ""),
             ("Lift in top 10 %", f"{card['top_decile_lift']:.2f}x", "churners found per call, against random"),
             ("Brier score", f"{card['brier']:.4f}", "lower is better")]
    figs = []
    lift = d.lift.sort_values(["algorithm", "decile"])
    if not lift.empty:
        fig = _figure(f"Cumulative gains on the test month {str(card['test_month'])[:7]}",
                      "subscribers called, highest score first (%)", "churners reached (%)", height=420)
        fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", name="random",
                                 line={"dash": "dot", "color": "#999"}))
        for algorithm, rows in lift.groupby("algorithm", sort=True):
            fig.add_trace(go.Scatter(x=[0, *(100 * rows["targeted_share"])],
                                     y=[0, *(100 * rows["churners_captured_share"])], mode="lines+markers",
                                     name=str(algorithm)))
        figs.append(fig)
    calib = d.calibration.sort_values(["algorithm", "bin"])
    if not calib.empty:
        fig = _figure("Calibration: predicted against observed churn", "mean predicted churn probability (%)",
                      "observed churn rate (%)", height=420)
        top = 100 * max(calib["mean_score"].max(), calib["observed_rate"].max(), 0.01)
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="perfect calibration",
                                 line={"dash": "dot", "color": "#999"}))
        for algorithm, rows in calib.groupby("algorithm", sort=True):
            fig.add_trace(go.Scatter(x=100 * rows["mean_score"], y=100 * rows["observed_rate"], mode="lines+markers",
                                     name=str(algorithm), customdata=rows["n"],
                                     hovertemplate="predicted %{x:.1f} %, observed %{y:.1f} %, "
                                                   "%{customdata:,} subscribers<extra></extra>"))
        figs.append(fig)
    drift = d.drift[d.drift["model_version"] == version].sort_values("psi", ascending=False).head(20)
    if not drift.empty:
        fig = _figure(f"Drift of {d.month:%Y-%m} against the training data (top {len(drift)} by PSI)",
                      "feature", "population stability index (PSI)", height=420)
        fig.add_trace(go.Bar(x=drift["feature"], y=drift["psi"], name="PSI",
                             marker_color=["#de2d26" if f else "#6baed6" for f in drift["flagged"]]))
        fig.add_hline(y=float(drift["threshold"].iloc[0]), line_dash="dash", line_color="#de2d26",
                      annotation_text=f"alert at {float(drift['threshold'].iloc[0]):g}")
        figs.append(fig)
    flagged = d.drift[(d.drift["model_version"] == version) & d.drift["flagged"]]["feature"].tolist()
    lead = (f"Model {version} scored {d.month:%Y-%m}: out-of-time AUC {card['auc']:.3f} on "
            f"{str(card['test_month'])[:7]}, "
            f"the top-scored 10 % hold {card['top_decile_lift']:.1f}x the average churn rate. "
            + (f"Drift above the alert level: {', '.join(flagged)}." if flagged else "No feature drifted past "
               "the alert level."))
    return Section("churn-model", title, lead, figs, cards=cards)


def key_accounts(d: ReportData) -> Section:
    ka = d.key_accounts.sort_values(["health_score", "group_id"])
    if ka.empty:
        return Section("key-accounts", "Key-account health", "", empty="no key account (group) lines this month")
    shown = ka.head(TOP)
    fig = _figure(f"Health of the {len(shown)} key accounts in the worst health, {d.month:%Y-%m}",
                  "health score (0-100, 100: no churn, decline or complaints)", "group",
                  height=max(320, 28 * len(shown)))
    fig.add_trace(go.Bar(x=shown["health_score"], y=shown["group_id"], orientation="h",
                         marker_color=[_health_colour(v) for v in shown["health_score"]],
                         customdata=shown["health_reasons"], hovertemplate="%{y}: %{x:.1f}<br>%{customdata}"
                                                                           "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(range=[0, 100])
    before = d.key_accounts_before.set_index("group_id")["health_score"] if not d.key_accounts_before.empty else {}
    table = pd.DataFrame({
        "group": shown["group_id"],
        "lines": [f"{int(v):,}" for v in shown["lines"]],
        "revenue": [cny(v) for v in shown["revenue_fen"]],
        "revenue share": [pct(v) for v in shown["revenue_share"]],
        "3-month revenue change": [pct(v) for v in shown["revenue_change_3m"]],
        "churned lines": shown["churned_lines"].astype(int),
        "complaints": shown["complaint_count"].astype(int),
        "health": [f"{v:.1f}" for v in shown["health_score"]],
        "last month": [_num(before.get(g), 1) if len(before) else "-" for g in shown["group_id"]],
        "why": shown["health_reasons"],
    })
    weak = int((ka["health_score"] < 60).sum())
    lead = (f"{len(ka):,} key account(s) bring {pct(ka['revenue_share'].sum())} of revenue; {weak:,} score below 60. "
            "Health starts at 100 and loses points for churned lines, falling revenue and complaints.")
    return Section("key-accounts", "Key-account health", lead, [fig], tables=[("Worst health first", table)])


def _health_colour(score) -> str:
    return "#de2d26" if score < 60 else "#fdae6b" if score < 80 else "#31a354"


def watchlist(d: ReportData) -> Section:
    wl = d.watchlist.sort_values("priority_rank")
    if wl.empty:
        return Section("watchlist", "Churn watch list", "", empty=(
            "no watch list this month: it needs churn scores, which need a trained model (see the churn model)"))
    called = wl[~wl["control_group"]] if "control_group" in wl else wl
    by_segment = called.groupby("value_segment")["expected_loss_fen"].agg(["sum", "size"]).reindex(list(SEGMENTS))
    fig = _figure(f"Expected loss on the watch list by value segment, {d.month:%Y-%m}", "value segment",
                  "expected loss (CNY: churn score x CLV)", height=380)
    fig.add_trace(go.Bar(x=list(SEGMENTS), y=by_segment["sum"].fillna(0) / 100,
                         marker_color=[SEGMENT_COLOURS[s] for s in SEGMENTS],
                         customdata=by_segment["size"].fillna(0),
                         hovertemplate="%{x}: %{y:,.0f} CNY, %{customdata:,} subscribers<extra></extra>"))
    top = wl.head(TOP)
    table = pd.DataFrame({
        "rank": top["priority_rank"].astype(int),
        "msisdn_key": [f"{k[:12]}…" for k in top["msisdn_key"]],
        "segment": top["value_segment"],
        "churn score": [f"{v:.3f}" for v in top["churn_score"]],
        "CLV": [cny(v) for v in top["clv_fen"]],
        "expected loss": [cny(v) for v in top["expected_loss_fen"]],
        "why": [_reasons(r) for r in top["top_reasons"]],
        "action": top["recommended_action"],
        "control group": ["yes (not called)" if c else "" for c in top["control_group"]],
    })
    lead = (f"{len(wl):,} subscribers to call, ranked by expected loss (churn score x lifetime value): "
            f"{cny(called['expected_loss_fen'].sum())} at stake. A random control group is held back to "
            "measure what the calls save.")
    return Section("watchlist", "Churn watch list", lead, [fig], tables=[(
        f"The first {len(top)} (msisdn_key: first 12 hex digits; the full key is in crm.churn_watchlist)", table)])


def _reasons(raw) -> str:
    """The model's top reasons (a JSON list of {reason, ...}) as plain words."""
    try:
        items = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (TypeError, ValueError):
        return str(raw)
    return "; ".join(str(i.get("reason", i)) if isinstance(i, dict) else str(i) for i in items[:3])


def lost_customers(d: ReportData) -> Section:
    lost = d.lost
    if lost.empty:
        return Section("lost-customers", "Lost customers and win-back", "", empty="no subscriber churned this month")
    segment = lost["value_segment_before"].fillna("UNKNOWN")
    fig = _figure(f"Churned subscribers by reason and segment before, {d.month:%Y-%m}", "terminate reason",
                  "subscribers", height=380)
    for seg in (*SEGMENTS, "UNKNOWN"):
        part = lost[segment == seg]
        if len(part):
            counts = part["terminate_reason"].value_counts()
            fig.add_trace(go.Bar(x=list(counts.index), y=list(counts.values), name=seg,
                                 marker_color=SEGMENT_COLOURS[seg]))
    fig.update_layout(barmode="stack")
    top = lost.sort_values(["winback_priority", "subscriber_id"]).head(TOP)
    table = pd.DataFrame({
        "priority": [_num(v, 0) for v in top["winback_priority"]],
        "msisdn_key": [f"{k[:12]}…" for k in top["msisdn_key"]],
        "reason": top["terminate_reason"],
        "tenure (months)": top["tenure_months"].astype(int),
        "revenue, last 3 months": [cny(v) for v in top["last_3m_revenue_fen"]],
        "segment before": top["value_segment_before"].fillna("-"),
        "off-net share": [pct(v) for v in top["offnet_share_before"]],
        "complaints": top["complaints_before"].astype(int),
    })
    voluntary = int((lost["terminate_reason"] == "VOLUNTARY").sum())
    lead = (f"{len(lost):,} subscriptions ended, {voluntary:,} of them by the customer's choice; they brought "
            f"{cny(lost['last_3m_revenue_fen'].sum())} in their last three months. Win-back starts with the "
            "most valuable voluntary leavers.")
    return Section("lost-customers", "Lost customers and win-back priorities", lead, [fig],
                   tables=[("Win-back priorities", table)])


def next_generation(d: ReportData) -> Section:
    cand = d.migration_candidates
    if cand.empty:
        return Section("next-generation", "Next-generation candidates", "",
                       empty="no subscriber on an older network generation this month")
    paths = cand.groupby(["network_gen", "target_gen"]).size().reset_index(name="subscribers")
    fig = _figure(f"Upgrade candidates by network generation, {d.month:%Y-%m}", "upgrade path", "subscribers",
                  height=360)
    fig.add_trace(go.Bar(x=[f"{a} -> {b}" for a, b in zip(paths["network_gen"], paths["target_gen"])],
                         y=paths["subscribers"], marker_color="#6a51a3"))
    figs = [fig]
    scored = cand.dropna(subset=["propensity"])
    if len(scored):
        hist = _figure("Upgrade propensity of the candidates", "propensity to upgrade (%)", "subscribers", 340)
        hist.add_trace(go.Histogram(x=100 * scored["propensity"], nbinsx=20, marker_color="#9e9ac8"))
        figs.append(hist)
    top = cand.sort_values("priority_rank").head(TOP)
    table = pd.DataFrame({
        "rank": top["priority_rank"].astype(int),
        "msisdn_key": [f"{k[:12]}…" for k in top["msisdn_key"]],
        "from": top["network_gen"], "to": top["target_gen"],
        "propensity": [pct(v) for v in top["propensity"]],
        "data, 3-month mean (MB)": [_num(v, 0) for v in top["data_mb_3m"]],
        "why": top["reason"],
    })
    model = d.migration_model
    how = " Ranked by a hand rule until upgrades have been seen to learn from."
    if not model.empty and not _missing(model.iloc[0]["auc"]):
        m = model.iloc[0]
        how = (f" Upgrade model {m['model_version']}: out-of-time AUC {m['auc']:.3f}"
               + (f" (the hand rule: {m['rule_auc']:.3f})" if not _missing(m["rule_auc"]) else "") + ".")
    lead = f"{len(cand):,} subscribers on a network generation below the newest." + how
    return Section("next-generation", "Next-generation candidates", lead, figs, tables=[("First candidates", table)])


def satisfaction(d: ReportData) -> Section:
    s = d.satisfaction
    if s.empty:
        return Section("satisfaction", "Satisfaction drivers", "", empty=(
            "no survey period has closed with enough respondents by the end of this month"))
    s = s.sort_values("std_coefficient", ascending=False)
    row = s.iloc[0]
    fig = _figure(f"What drives overall satisfaction, survey {row['period_start']} to {row['period_end']}",
                  "driver", "standardised coefficient (effect of one standard deviation)", height=380)
    fig.add_trace(go.Bar(x=s["driver"], y=s["std_coefficient"],
                         marker_color=["#08519c" if p < 0.05 else "#9ecae1" for p in s["p_value"]],
                         customdata=s["p_value"], hovertemplate="%{x}: %{y:.3f} (p = %{customdata:.3f})"
                                                                "<extra></extra>"))
    table = pd.DataFrame({"driver": s["driver"], "coefficient": [f"{v:.3f}" for v in s["coefficient"]],
                          "standardised": [f"{v:.3f}" for v in s["std_coefficient"]],
                          "p-value": [f"{v:.3f}" for v in s["p_value"]]})
    significant = s[s["p_value"] < 0.05]["driver"].tolist()
    lead = (f"A regression of overall satisfaction on the survey's drivers ({int(row['respondents']):,} "
            f"respondents, R² {row['r_squared']:.2f}). "
            + (f"Significant at 5 %: {', '.join(significant)} (dark bars)." if significant else
               "No driver is significant at 5 % with this many respondents."))
    return Section("satisfaction", "Satisfaction drivers", lead, [fig], tables=[("Coefficients", table)])


def data_quality(d: ReportData) -> Section:
    dl = d.deliveries
    if dl.empty:
        return Section("data-quality", "Data quality of the month's deliveries", "",
                       empty="no ingest accounting for the deliveries this month was built from")
    per_feed = dl.groupby("feed").agg(files=("source_file", "nunique"), deliveries=("delivery_id", "nunique"),
                                      read=("rows_read", "sum"), loaded=("rows_loaded", "sum"),
                                      quarantined=("rows_quarantined", "sum"), duplicates=("rows_duplicate", "sum"),
                                      failed=("status", lambda s: int((s == "FAILED").sum()))).reset_index()
    fig = _figure(f"Records quarantined per 10,000 read, by feed and reason ({d.month:%Y-%m} deliveries)",
                  "feed", "records quarantined per 10,000 read", height=380)
    read = per_feed.set_index("feed")["read"]
    for reason, rows in d.quarantine.groupby("reject_reason", sort=True):
        counts = rows["feed"].value_counts()
        fig.add_trace(go.Bar(x=list(per_feed["feed"]), name=str(reason), customdata=[
            int(counts.get(f, 0)) for f in per_feed["feed"]], y=[
            10000 * counts.get(f, 0) / read[f] if read[f] else 0 for f in per_feed["feed"]],
            hovertemplate="%{x}: %{customdata:,} records (%{y:.1f} per 10,000)<extra>" + str(reason) + "</extra>"))
    fig.update_layout(barmode="stack")
    if d.quarantine.empty:
        fig.add_annotation(text="no record quarantined", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    table = per_feed.rename(columns={"read": "records read", "loaded": "loaded", "failed": "failed files"})
    for col in ("records read", "loaded", "quarantined", "duplicates"):
        table[col] = [f"{int(v):,}" for v in table[col]]
    checks = d.checks
    failed = checks[~checks["success"].astype(bool)] if not checks.empty else checks
    tables = [("Deliveries read by the month's build, per feed", table)]
    if not failed.empty:
        tables.append(("Checks that failed", failed[["table_name", "business_date", "check_name", "severity",
                                                     "unexpected_count"]].head(TOP)))
    if not d.reconciliation.empty:
        rec = d.reconciliation
        tables.append(("Billed against rated usage", pd.DataFrame({
            "item": rec["item"], "billed": [cny(v) for v in rec["billed_fen"]],
            "rated from CDRs": [cny(v) for v in rec["rated_fen"]],
            "difference": [pct(v, 2) for v in rec["difference_share"]],
            "subscribers differing": [f"{int(v):,}" for v in rec["subscribers_differing"]]})))
    blocking = int((failed["severity"] == "blocking").sum()) if not failed.empty else 0
    warnings = len(failed) - blocking
    lead = (f"{int(per_feed['deliveries'].sum()):,} deliveries ({int(per_feed['files'].sum()):,} files, "
            f"{int(per_feed['read'].sum()):,} records) fed this month: {int(per_feed['loaded'].sum()):,} loaded, "
            f"{int(per_feed['quarantined'].sum()):,} quarantined, {int(per_feed['duplicates'].sum()):,} duplicates "
            f"dropped, {int(per_feed['failed'].sum()):,} files failed their checks. {len(checks):,} data-quality "
            f"checks ran on the month's dates: {len(failed):,} failed ({blocking:,} blocking, {warnings:,} warnings).")
    return Section("data-quality", "Data quality of the month's deliveries", lead, [fig], tables=tables)


#: the section builders, in the report's order (their ids: SECTION_IDS)
BUILDERS = (headline, value_matrix, segments, segment_migration, concentration, trends, clv, churn_model,
            key_accounts, watchlist, lost_customers, next_generation, satisfaction, data_quality)
