"""The report renderers on a sample report: JSON, the sectioned CSV, the HTML page."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporting.render import case_anchor, filename, render, to_csv, to_html
from shared.reference import LOCAL_AUTHORITIES, VOCABULARIES


def sample_report() -> dict:
    counts = {slug: (i * 7) % 23 for i, slug in enumerate(LOCAL_AUTHORITIES)}
    total = sum(counts.values())
    types = {t: i % 4 for i, t in enumerate(VOCABULARIES["incident_type"])}
    return {
        "report": "national",
        "period": {"from": "2013-06-01", "to": "2015-01-31"},
        "generated_at": "2026-11-24T18:40:00Z",
        "figures": {
            "notifications": total,
            "authorities_notifying": sum(1 for n in counts.values() if n),
            "notified_within_5_working_days": {"count": 250, "base": total, "percent": 72.7},
            "late_working_days": {"min": 6, "max": 40, "median": 8, "mean": 9.25},
        },
        "tables": {
            "notifications_by_authority": {
                "title": "Notifications by local authority",
                "columns": ["local authority", "notifications", "percent"],
                "rows": [[la.name, counts[s], round(100 * counts[s] / total, 1)] for s, la in LOCAL_AUTHORITIES.items()],
            },
            "notifications_by_incident_type": {
                "title": "Notifications by incident type",
                "columns": ["incident type", "notifications", "percent"],
                "rows": [[t, n, None] for t, n in types.items()],
            },
            "timeliness": {
                "title": "Timeliness",
                "columns": ["measure", "count", "base", "percent"],
                "rows": [
                    ["Notified within 5 working days", 250, total, 72.7],
                    ["Forwarded to the Scottish Government within 2 working days", 300, 318, 94.3],
                    ["Inspectorate responses within 1 month", 0, 0, None],
                ],
            },
        },
    }


class Page(HTMLParser):
    """What the tests look for in a page: elements by tag, bars by chart, cell texts by table."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.bars: dict[str, list[dict]] = {}
        self.cells: dict[str, list[list[str]]] = {}
        self._chart = self._table = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "figure":
            self._chart = attrs.get("data-table")
        elif tag == "rect" and "bar" in attrs.get("class", ""):
            self.bars.setdefault(self._chart, []).append(attrs)
        elif tag == "section" and attrs.get("id", "").startswith("table-"):
            self._table = attrs["id"].removeprefix("table-")
        elif tag == "tr" and self._table:
            self.cells.setdefault(self._table, []).append([])
        elif tag == "td" and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._chart = None
        elif tag == "section":
            self._table = None
        elif tag == "td" and self._cell is not None:
            self.cells[self._table][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_json_is_the_report_itself():
    body, media_type = render(sample_report(), "json")
    assert media_type == "application/json"
    assert json.loads(body) == sample_report()


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="pdf"):
        render(sample_report(), "pdf")


def _sections(text: str) -> dict[str, list[list[str]]]:
    assert text.startswith("\ufeff"), "a byte order mark, so spreadsheets read UTF-8"
    sections, current = {}, None
    for row in csv.reader(io.StringIO(text.removeprefix("\ufeff"))):
        if not row:
            current = None
        elif current is None:
            current = sections.setdefault(row[0], [row])
        else:
            current.append(row)
    return sections


def test_csv_has_a_section_per_part_of_the_report():
    body, media_type = render(sample_report(), "csv")
    assert media_type == "text/csv; charset=utf-8"
    sections = _sections(body.decode("utf-8"))
    assert list(sections) == [
        "report", "figures", "notifications_by_authority", "notifications_by_incident_type", "timeliness",
    ]
    assert sections["report"][1:] == [
        ["report", "national"], ["period_from", "2013-06-01"], ["period_to", "2015-01-31"],
        ["generated_at", "2026-11-24T18:40:00Z"],
    ]
    figures = sections["figures"]
    assert figures[1] == ["figure", "value", "base", "percent"]
    assert ["notified_within_5_working_days", "250", str(sample_report()["figures"]["notifications"]), "72.7"] in figures
    assert ["late_working_days.mean", "9.25", "", ""] in figures
    authorities = sections["notifications_by_authority"]
    assert authorities[0] == ["notifications_by_authority", "Notifications by local authority"]
    assert authorities[1] == ["local authority", "notifications", "percent"]
    assert len(authorities) == 2 + 32
    assert sections["timeliness"][-1] == ["Inspectorate responses within 1 month", "0", "0", ""]


def test_csv_of_one_table_is_its_header_and_rows():
    rows = list(csv.reader(io.StringIO(to_csv(sample_report(), table="timeliness").removeprefix("\ufeff"))))
    assert rows[0] == ["measure", "count", "base", "percent"] and len(rows) == 4
    with pytest.raises(KeyError):
        to_csv(sample_report(), table="nothing")


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted_out():
    report = sample_report()
    report["tables"]["timeliness"]["rows"].append(["=HYPERLINK(\"x\")", -3, "+1", "@SUM(A1)"])
    last = _sections(to_csv(report))["timeliness"][-1]
    assert last == ["'=HYPERLINK(\"x\")", "-3", "'+1", "'@SUM(A1)"]


def test_html_charts_have_a_bar_per_row_and_tables_every_row():
    body, media_type = render(sample_report(), "html")
    assert media_type == "text/html; charset=utf-8"
    page = Page(body.decode("utf-8"))
    assert {name: len(bars) for name, bars in page.bars.items()} == {
        "notifications_by_authority": 32, "notifications_by_incident_type": 19, "timeliness": 3,
    }
    fife = next(b for b in page.bars["notifications_by_authority"] if b["data-label"] == "Fife")
    assert fife["data-value"] == str(sample_report()["tables"]["notifications_by_authority"]["rows"][13][1])
    widths = [float(b["width"]) for b in page.bars["timeliness"]]
    assert widths[0] < widths[1] and widths[2] == 0
    assert len(page.cells["notifications_by_authority"]) == 1 + 32  # the header row, then one per authority
    # Whole percentages as the published report prints them; the exact share on hover.
    assert page.cells["timeliness"][1] == ["Notified within 5 working days", "250", "344", "73%"]
    assert {"class": "num", "title": "250 of 344 = 72.6744%"} in [a for t, a in page.tags if t == "td"]


def test_html_percentages_are_whole_and_half_up_with_the_exact_share_on_hover():
    report = sample_report()
    report["figures"]["reviews_order_reviews_referenced"] = {"count": 49, "base": 80, "percent": 61.3}
    report["figures"]["half"] = {"count": 1, "base": 8, "percent": 12.5}
    page = Page(to_html(report))
    titles = {a.get("title") for t, a in page.tags if t == "td"}
    assert {"49 of 80 = 61.25%", "1 of 8 = 12.5%"} <= titles
    html = to_html(report)
    assert ">61%</td>" in html and ">13%</td>" in html  # 12.5 → 13, never to even
    # A table cell with only its percentage shows it whole, the one-decimal figure on hover.
    cells = [a for t, a in page.tags if t == "td" and a.get("title", "").endswith("%") and " of " not in a["title"]]
    assert cells


def test_a_share_table_rounds_its_exact_share_once():
    # 989 of 2000 is 49.45%: 49.5 to one decimal, but 49 whole, not 50 by rounding twice.
    report = sample_report()
    report["tables"]["review_findings"] = {
        "title": "Learning themes", "columns": ["finding", "reviews", "percent"],
        "rows": [["Other", 989, 49.5]], "base": 2000,
    }
    page = Page(to_html(report))
    assert page.cells["review_findings"][1] == ["Other", "989", "49%"]
    assert {"class": "num", "title": "989 of 2,000 = 49.45%"} in [a for t, a in page.tags if t == "td"]


def test_a_running_period_says_so_in_html_and_csv():
    report = sample_report() | {"report": "quarterly", "as_at": "2026-11-30T10:15:00+00:00", "complete": False}
    note = "figures to 30 November 2026, 10:15 UTC; the quarter is still running"
    assert note[0].upper() + note[1:] in to_html(report)
    assert ["note", note] in _sections(to_csv(report))["report"]
    national = sample_report() | {"as_at": "2026-11-30T10:15:00+00:00", "complete": False}
    assert "the period is still running" in to_html(national)
    done = sample_report() | {"as_at": "2015-02-01T00:00:00+00:00", "complete": True}
    assert "still running" not in to_html(done) and "still running" not in to_csv(done)


def test_html_loads_nothing_from_anywhere():
    html = to_html(sample_report())
    page = Page(html)
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, a in page.tags if "src" in a]
    assert {a["href"][0] for t, a in page.tags if "href" in a} == {"#"}
    for reference in ("http:", "https:", "//", "url(", "@import"):
        assert reference not in html
    policy = next(a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in policy


def test_a_new_figure_or_table_needs_no_change():
    report = sample_report()
    report["figures"]["open_cases"] = 12
    report["tables"]["breaches_by_authority"] = {
        "title": "Breaches by local authority", "columns": ["local authority", "rule", "breaches"],
        "rows": [["Fife", "review_submission", 2]],
    }
    page = Page(to_html(report))
    assert [a["data-figure"] for t, a in page.tags if "data-figure" in a][-1] == "open_cases"
    assert page.cells["breaches_by_authority"][1] == ["Fife", "review_submission", "2"]
    assert _sections(to_csv(report))["breaches_by_authority"][-1] == ["Fife", "review_submission", "2"]


def test_a_report_without_the_charted_tables_has_no_charts():
    report = sample_report() | {"tables": {}}
    page = Page(to_html(report))
    assert page.bars == {} and not [t for t, _ in page.tags if t == "svg"]


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and "\r" not in s))
def test_any_text_in_a_cell_stays_text(text):
    report = sample_report()
    report["tables"]["notifications_by_authority"]["rows"][0][0] = text
    report["tables"]["notifications_by_authority"]["title"] = text
    page = Page(to_html(report))
    assert page.cells["notifications_by_authority"][1][0] == text
    assert page.bars["notifications_by_authority"][0]["data-label"] == text
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and tags.count("table") == 4


def test_names_are_escaped():
    report = sample_report()
    report["tables"]["timeliness"]["rows"][0][0] = '<script>alert("x")</script> & "more"'
    html = to_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; \"more\"" in html


def test_the_download_name_says_what_it_is():
    assert filename(sample_report(), "csv") == "sir-national-2013-06-01-to-2015-01-31.csv"
    assert filename({"report": "../etc", "period": {"from": "a/b", "to": "c"}}, "html") == "sir-.._etc-a_b-to-c.html"


def test_a_report_as_of_a_moment_says_so_in_csv_and_html():
    report = sample_report() | {"as_at": "2015-02-01T00:00:00+00:00", "complete": True,
                                "as_of": "2015-01-31T23:59:00+00:00", "basis": "cohort"}
    rows = list(csv.reader(io.StringIO(to_csv(report).removeprefix("\ufeff"))))
    assert ["as_of", "2015-01-31T23:59:00+00:00"] in rows and ["basis", "cohort"] in rows
    html = render(report, "html")[0].decode()
    assert "as known on 31 January 2015" in html and "cohort" in html
    made_now = report | {"as_of": report["generated_at"], "basis": "received"}
    assert "as known when made" in render(made_now, "html")[0].decode()


def test_the_html_page_links_figures_and_rows_to_their_cases_and_escapes_them():
    report = sample_report()
    slug = next(iter(LOCAL_AUTHORITIES))
    report["tables"]["notifications_by_authority"]["keys"] = list(LOCAL_AUTHORITIES)
    cases = {
        case_anchor("notifications"): {"figure": "notifications", "value": None, "count": 3, "cases": [
            {"case_id": "c1", "council_reference": "<b>REF</b>", "local_authority": slug,
             "notified_on": "2014-01-02", "value": "2014-01-02"}]},
        case_anchor("notifications_by_authority", slug): {
            "figure": "notifications_by_authority", "value": slug, "count": 0, "cases": []},
    }
    html = to_html(report, cases)
    assert f'href="#{case_anchor("notifications")}"' in html
    assert f'href="#{case_anchor("notifications_by_authority", slug)}"' in html
    assert "&lt;b&gt;REF&lt;/b&gt;" in html and "<b>REF" not in html
    assert "2 more: GET /v1/reports/national/cases" in html
    assert 'id="cases"' not in to_html(report)  # without cases, no section and no links
