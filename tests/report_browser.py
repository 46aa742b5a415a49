"""Open a report in headless Chromium (Debian's, driven by Playwright) and read back what a person
would see: which sections are there, whether each chart drew marks, what the console said, and
whether the page asked any host for anything (it must open offline)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

#: per section: the number of drawn marks (SVG paths, bars, heatmap images with a non-empty box)
#: of each Plotly chart, and whether the section says it has nothing to show yet
SECTIONS_JS = """(ids) => ids.map(id => {
  const s = document.getElementById(id);
  if (!s) return {id, present: false, charts: [], empty: false, title: ''};
  const charts = [...s.querySelectorAll('.js-plotly-plot')].map(p => [...p.querySelectorAll(
      '.cartesianlayer .trace path, .cartesianlayer .trace image, .heatmaplayer image, .barlayer path')]
    .filter(e => { const b = e.getBBox();
                   return b.width * b.height > 0 || (b.width + b.height > 0 && e.tagName === 'path'); })
    .length);
  return {id, present: true, charts, empty: !!s.querySelector('p.empty'), title: s.querySelector('h2').textContent};
})"""


@dataclass
class Seen:
    sections: list[dict]
    console_errors: list[str]
    requests: list[str]  # every URL the page asked for other than its own file
    text: str  # the page's visible text


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("Chromium is not installed: `make test` installs Debian's (infra/chromium/install.sh)")
    return path


def open_report(report: Path, section_ids: list[str], screenshot: Path | None = None) -> Seen:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    url = report.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def refuse(route):
                if route.request.url != url:
                    requests.append(route.request.url)
                    return route.abort()
                return route.continue_()

            page.route("**/*", refuse)
            page.goto(url, wait_until="load")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
            sections = page.evaluate(SECTIONS_JS, section_ids)
            text = page.inner_text("body")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-top.png")))
        finally:
            browser.close()
    return Seen(sections, errors, requests, text)
