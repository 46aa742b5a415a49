"""One self-contained HTML page: Plotly's script inlined once, every chart and table in place, a
table of contents, no request to any other host (the page opens offline and from an e-mail)."""

from __future__ import annotations

from datetime import datetime, timezone

import jinja2
import markupsafe
import pandas as pd
import plotly
import plotly.io as pio

from crm_pipeline import __version__
from crm_pipeline.report.data import ReportData
from crm_pipeline.report.sections import Section

LAYOUT = {"template": "plotly_white", "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 13},
          "margin": {"l": 70, "r": 30, "t": 70, "b": 70}, "legend": {"orientation": "v"}}
#: the chart toolbar: keep the PNG download, drop what a manager does not need; no link to any host
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}

TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="crm {{ version }}">
<title>CRM report {{ month }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #08306b; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: .85; font-size: 14px; }
nav { padding: 10px 32px; background: #fff; border-bottom: 1px solid #ddd; font-size: 14px;
      display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #08519c; text-decoration: none; white-space: nowrap; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 24px 40px; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 8px 24px 20px; margin: 20px 0; }
section h2 { font-size: 20px; margin: 14px 0 6px; }
p.lead { font-size: 15px; line-height: 1.45; margin: 4px 0 12px; }
p.empty { color: #8a6d3b; background: #fcf8e3; padding: 10px 14px; border-radius: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 10px 0; }
.card { flex: 1 1 200px; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 14px; }
.card .label { font-size: 13px; color: #555; }
.card .value { font-size: 22px; font-weight: 600; margin: 2px 0; }
.card .change { font-size: 13px; color: #555; }
.chart { margin: 8px 0; }
table.data { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; width: 100%; }
table.data th, table.data td { border-bottom: 1px solid #e5e5e5; padding: 4px 8px; text-align: left;
                               vertical-align: top; }
table.data th { background: #f0f3f7; }
caption { text-align: left; font-weight: 600; padding: 6px 0; }
footer { color: #666; font-size: 12px; text-align: center; padding: 0 0 30px; }
</style>
<script>{{ plotly_js | safe }}</script>
</head>
<body>
<header>
<h1>CRM report, {{ month_name }}</h1>
<p>{{ subtitle }}</p>
</header>
<nav id="contents">{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}
<section id="{{ s.id }}" data-section="{{ s.id }}">
<h2>{{ s.title }}</h2>
{% if s.empty %}<p class="empty">Not available yet: {{ s.empty }}.</p>{% else %}
<p class="lead">{{ s.lead }}</p>
{% if s.cards %}<div class="cards">{% for label, value, change in s.cards %}
<div class="card"><div class="label">{{ label }}</div><div class="value">{{ value }}</div>
<div class="change">{{ change }}</div></div>
{% endfor %}</div>{% endif %}
{% for chart in s.charts %}<div class="chart">{{ chart | safe }}</div>
{% endfor %}
{% for caption, table in s.tables %}{{ table | safe }}
{% endfor %}
{% endif %}
</section>
{% endfor %}
</main>
<footer>crm {{ version }} · generated {{ generated }} from lake {{ lake }} · money in CNY ·
no contact data: subscribers appear by msisdn_key only</footer>
</body>
</html>
""")


def render(d: ReportData, sections: list[Section], lake: str) -> str:
    views = [_view(s) for s in sections]
    return TEMPLATE.render(
        version=__version__, month=f"{d.month:%Y-%m}", month_name=f"{d.month:%B %Y}", sections=views,
        subtitle=(f"{len(d.months)} month(s) analysed, {d.months[0]:%Y-%m} to {d.months[-1]:%Y-%m}; "
                  f"figures for {d.month:%Y-%m} unless a chart says otherwise"),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), lake=lake,
        plotly_js=plotly.offline.get_plotlyjs())


def _view(s: Section) -> dict:
    charts = []
    for i, fig in enumerate(s.figures):
        fig.update_layout(**LAYOUT)
        charts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"{s.id}-chart-{i + 1}",
                                  config=CONFIG))
    tables = [(caption, _table(caption, frame)) for caption, frame in s.tables if not frame.empty]
    return {"id": s.id, "title": s.title, "lead": s.lead, "empty": s.empty, "cards": s.cards, "charts": charts,
            "tables": tables}


def _table(caption: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(index=False, border=0, escape=True, na_rep="-")
    head, rest = body.split(">", 1)  # the opening <table ...> tag
    assert head.startswith("<table"), head
    return f'<table class="data"><caption>{markupsafe.escape(caption)}</caption>{rest}'

