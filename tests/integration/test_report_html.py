"""The HTML report opened in headless Chromium (Debian's): its charts and tables are in
the page's DOM after Chromium parsed it, and the page asked the network for nothing.

Chromium runs with every host name mapped to "not found" and its background services
off, so nothing leaves the machine whatever a page holds; its network log shows what
the page itself requested.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.reporting.render import to_html
from shared.reference import VOCABULARIES
from tests.factories import notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually
from tests.unit.test_render import sample_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# CI installs it (.ci/run), so there its absence is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def open_in_chromium(page: Path, work: Path) -> tuple[str, list[str]]:
    """(the DOM after loading `page`, the URLs the page requested other than file:)."""
    assert CHROMIUM is not None, "chromium is not installed"
    net_log = work / "net-log.json"
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--no-pings", "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={work / 'profile'}", f"--log-net-log={net_log}",
            "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = json.loads(net_log.read_text())["events"]
    # Requests a page makes carry its (file://) site; the browser's own do not.
    requested = {
        e["params"]["url"]
        for e in events
        if "url" in e.get("params", {}) and "file://" in e["params"].get("site_for_cookies", "")
    }
    return result.stdout, sorted(url for url in requested if not url.startswith("file:"))


class Dom(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.svg_bars: dict[str, int] = {}
        self.body_rows: dict[str, int] = {}
        self.references: list[tuple[str, str, str]] = []
        self._chart = self._table = None
        self._in_svg = self._in_body = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "srcset", "action", "data", "xlink:href", "poster"):
            if name in attrs and not str(attrs[name]).startswith("#"):
                self.references.append((tag, name, attrs[name]))
        if tag == "figure":
            self._chart = attrs.get("data-table")
        elif tag == "svg":
            self._in_svg = True
        elif tag == "rect" and self._in_svg and "bar" in attrs.get("class", "").split():
            self.svg_bars[self._chart] = self.svg_bars.get(self._chart, 0) + 1
        elif tag == "section" and attrs.get("id", "").startswith("table-"):
            self._table = attrs["id"].removeprefix("table-")
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.body_rows[self._table] = self.body_rows.get(self._table, 0) + 1

    def handle_endtag(self, tag):
        if tag == "figure":
            self._chart = None
        elif tag == "svg":
            self._in_svg = False
        elif tag == "section":
            self._table = None
        elif tag == "tbody":
            self._in_body = False


def test_the_report_page_renders_its_charts_and_tables_offline(tmp_path):
    report = sample_report()
    page = tmp_path / "report.html"
    page.write_text(to_html(report), encoding="utf-8")

    dom_text, requested = open_in_chromium(page, tmp_path)
    dom = Dom(dom_text)
    assert dom.svg_bars == {
        "notifications_by_authority": 32,
        "notifications_by_incident_type": len(report["tables"]["notifications_by_incident_type"]["rows"]),
        "timeliness": len(report["tables"]["timeliness"]["rows"]),
    }
    assert dom.body_rows == {name: len(table["rows"]) for name, table in report["tables"].items()}
    assert "Glasgow City" in dom_text and "Na h-Eileanan Siar" in dom_text
    assert dom.references == []
    assert "url(" not in dom_text and "@import" not in dom_text
    assert requested == []


def test_the_network_check_would_see_a_page_that_loads_something(tmp_path):
    """The control: the same check on a page with an external image finds the request."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>')
    dom_text, requested = open_in_chromium(page, tmp_path)
    assert requested == ["http://example.invalid/x.png"]
    assert Dom(dom_text).references == [("img", "src", "http://example.invalid/x.png")]


async def test_the_national_report_served_as_html_renders_offline(platform, tokens, tmp_path):
    """End to end: notifications through intake, the report page from the reporting service."""
    today = dt.date.today()
    for who in ("glasgow", "fife"):
        answer = await platform.clients["intake"].post(
            "/v1/notifications", json=notification(incident_date=today.isoformat()), headers=bearer(tokens[who])
        )
        assert answer.status_code == 201, answer.text
    period = {"from": (today - dt.timedelta(days=1)).isoformat(), "to": (today + dt.timedelta(days=1)).isoformat()}
    reporting, inspectorate = platform.clients["reporting"], bearer(tokens["inspectorate"])

    async def both_counted():
        answer = await reporting.get("/v1/reports/national", params=period, headers=inspectorate)
        rows = {row[0]: row[1] for row in answer.json()["tables"]["notifications_by_authority"]["rows"]}
        return rows["Glasgow City"] >= 1 and rows["Fife"] >= 1

    await eventually(both_counted, what="the notifications in the national report")
    answer = await reporting.get("/v1/reports/national", params=period | {"format": "html"}, headers=inspectorate)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = tmp_path / "national.html"
    page.write_bytes(answer.content)

    dom_text, requested = open_in_chromium(page, tmp_path)
    dom = Dom(dom_text)
    assert dom.svg_bars["notifications_by_authority"] == 32
    assert dom.svg_bars["notifications_by_incident_type"] == len(VOCABULARIES["incident_type"])
    assert dom.svg_bars["timeliness"] >= 3
    assert dom.body_rows["notifications_by_authority"] == 32
    assert dom.references == [] and requested == []
