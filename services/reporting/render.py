"""A report (the dict the reporting core computes) as JSON, CSV or one self-contained HTML page.

The renderers read the report's shape, not its contents: every figure and every table
in it is written out, so a new figure or table needs no change here. Only the charts
name tables (`CHARTS`); a chart whose table is missing is left out.

The report's shape:
    {"report": "national" | "quarterly", "period": {"from": date, "to": date},
     "generated_at": timestamp, "figures": {name: number | {"count", "base", "percent"}},
     "tables": {name: {"title": str, "columns": [str, ...], "rows": [[cell, ...], ...]}}}

The HTML page needs no network to open: its CSS is inline, its charts are SVG drawn
here, it loads nothing, and its Content-Security-Policy forbids loading anything. It is
built as an ElementTree, whose serializer escapes every text and attribute, so a name
from the reference data (or anywhere) is always text, never markup.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["json", "csv", "html"]

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}

# The keys of a figure that is a share of a base.
RATIO_KEYS = ("count", "base", "percent")


@dataclass(frozen=True)
class Chart:
    table: str
    # The column whose numbers the bars show (matched without regard to case).
    value_column: str
    # Percentages are drawn against 100, counts against the largest count.
    out_of_100: bool = False


CHARTS = (
    Chart("notifications_by_authority", "notifications"),
    Chart("notifications_by_incident_type", "notifications"),
    Chart("timeliness", "percent", out_of_100=True),
    Chart("reporting_patterns", "quarters with none"),
    Chart("top_learning_themes_over_time", "reviews"),
)


def render(report: Mapping, fmt: Format, cases: Mapping[str, Mapping] | None = None) -> tuple[bytes, str]:
    """The report in `fmt` ("json", "csv" or "html") and its media type; `cases`: the
    lists behind its figures (keyed by `case_anchor`), which an HTML page links to."""
    if fmt == "json":
        body = to_json(report)
    elif fmt == "csv":
        body = to_csv(report)
    elif fmt == "html":
        body = to_html(report, cases)
    else:
        raise ValueError(f"unknown report format {fmt!r}; formats: {', '.join(MEDIA_TYPES)}")
    return body.encode("utf-8"), MEDIA_TYPES[fmt]


def filename(report: Mapping, fmt: Format) -> str:
    """A download name, e.g. `sir-national-2013-06-01-to-2015-01-31.csv`."""
    period = report.get("period") or {}
    parts = ["sir", str(report.get("report", "report")), str(period.get("from", "")), "to", str(period.get("to", ""))]
    stem = "-".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) + f".{fmt}"


# --- JSON ------------------------------------------------------------------------------


def to_json(report: Mapping) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=_json_value) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- CSV -------------------------------------------------------------------------------


def to_csv(report: Mapping, table: str | None = None) -> str:
    """The whole report as one sectioned CSV, or with `table` only that table (header + rows).

    Sections, separated by an empty row, each starting with a row [id, title]:
    `report` (report, period_from, period_to, generated_at), `figures` (columns figure,
    value, base, percent), then each table (its columns, then its rows). The text starts
    with a UTF-8 byte order mark so that spreadsheets read it as UTF-8.
    """
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    if table is not None:
        found = (report.get("tables") or {}).get(table)
        if found is None:
            raise KeyError(f"the report has no table {table!r}")
        writer.writerow([_csv_cell(c) for c in found["columns"]])
        writer.writerows([_csv_cell(c) for c in row] for row in found["rows"])
        return out.getvalue()
    period = report.get("period") or {}
    sections: list[list[list]] = [
        [
            ["report", "Report"],
            ["report", report.get("report")],
            ["period_from", period.get("from")],
            ["period_to", period.get("to")],
            ["generated_at", report.get("generated_at")],
            *_as_at_rows(report),
        ],
        [["figures", "Figures"], ["figure", "value", "base", "percent"], *_figure_rows(report.get("figures") or {})],
    ]
    for name, found in (report.get("tables") or {}).items():
        sections.append([[name, found.get("title", name)], list(found["columns"]), *found["rows"]])
    for number, rows in enumerate(sections):
        if number:
            writer.writerow([])
        writer.writerows([_csv_cell(c) for c in row] for row in rows)
    return out.getvalue()


def running_note(report: Mapping) -> str | None:
    """"figures to <date time>; the quarter is still running" for a report whose period
    had not ended when it was made (`complete: false`); None otherwise."""
    if report.get("complete", True):
        return None
    span = "quarter" if report.get("report") == "quarterly" else "period"
    return f"figures to {_timestamp(report.get('as_at', ''))}; the {span} is still running"


def known_note(report: Mapping) -> str | None:
    """"as known on <moment>" for a report asked as of an earlier moment, with its basis."""
    if "as_of" not in report:
        return None
    when = "as known when made" if report["as_of"] == report.get("generated_at") else (
        f"as known on {_timestamp(report['as_of'])} (only events recorded by then)"
    )
    basis = {"cohort": "reviews and responses of the period's notifications, whenever they came (cohort)",
             "received": "reviews and responses received in the period"}.get(report.get("basis") or "", "")
    return f"Figures {when}; {basis}" if basis else f"Figures {when}"


def _as_at_rows(report: Mapping) -> list[list]:
    if "as_at" not in report:
        return []
    rows = [["as_at", report.get("as_at")], ["complete", report.get("complete")]]
    if "as_of" in report:
        rows += [["as_of", report.get("as_of")], ["basis", report.get("basis")], ["note", known_note(report)]]
    if note := running_note(report):
        rows.append(["note", note])
    return rows


def _figure_rows(figures: Mapping) -> Iterator[list]:
    """[name, value, base, percent] for each figure; a figure that is a mapping of other
    numbers (min, max, ...) gives one row per number, named `figure.key`."""
    for name, value in figures.items():
        if _is_ratio(value):
            yield [name, value.get("count"), value.get("base"), value.get("percent")]
        elif isinstance(value, Mapping):
            yield from _figure_rows({f"{name}.{key}": inner for key, inner in value.items()})
        else:
            yield [name, value, None, None]


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        return value
    text = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- HTML ------------------------------------------------------------------------------

# No network, nothing loaded: inline styles only.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
       color: #1b1f24; margin: 0 auto; max-width: 60rem; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; border-bottom: 2px solid #2a6f97; padding-bottom: .2rem; }
p.meta { color: #555; margin: 0; }
nav ul { padding-left: 1.2rem; columns: 2; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f1f4f7; }
tbody th { font-weight: normal; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
svg { max-width: 100%; height: auto; font: 12px system-ui, Arial, sans-serif; }
svg .bar { fill: #2a6f97; }
svg .grid { stroke: #e3e3e3; }
svg .axis { stroke: #888; }
svg .label { fill: #1b1f24; }
svg .value { fill: #444; }
@media print { body { max-width: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""

_BAR_HEIGHT = 16
_ROW_HEIGHT = 22
_BAR_AREA = 380
_VALUE_AREA = 150
_CHAR_WIDTH = 6.8  # of the 12px label font, roughly: sizes the label column


def case_anchor(figure: str, value: str | None = None) -> str:
    """The id of a figure's (or a table row's) list of cases in the HTML page."""
    text = figure if value is None else f"{figure}--{value}"
    return "cases-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def to_html(report: Mapping, cases: Mapping[str, Mapping] | None = None) -> str:
    cases = cases or {}
    title = _report_title(report)
    html = ET.Element("html", lang="en")
    head = ET.SubElement(html, "head")
    ET.SubElement(head, "meta", charset="utf-8")
    ET.SubElement(head, "meta", {"http-equiv": "Content-Security-Policy", "content": CONTENT_SECURITY_POLICY})
    ET.SubElement(head, "meta", name="viewport", content="width=device-width, initial-scale=1")
    _text(head, "title", title)
    _text(head, "style", _CSS)

    body = ET.SubElement(html, "body")
    _text(body, "h1", title)
    _text(body, "p", f"Generated {_timestamp(report.get('generated_at', ''))}", **{"class": "meta"})
    if note := running_note(report):
        _text(body, "p", note[0].upper() + note[1:], **{"class": "meta running"})
    if note := known_note(report):
        _text(body, "p", note, **{"class": "meta known"})

    tables: Mapping[str, Mapping] = report.get("tables") or {}
    charts = [(chart, tables[chart.table]) for chart in CHARTS if chart.table in tables]
    nav = ET.SubElement(ET.SubElement(body, "nav"), "ul")
    _link(nav, "#figures", "Figures")
    if charts:
        _link(nav, "#charts", "Charts")
    for name, table in tables.items():
        _link(nav, f"#table-{name}", table.get("title", name))
    if cases:
        _link(nav, "#cases", "The cases behind each figure")

    _figures_section(body, report.get("figures") or {}, cases)
    if charts:
        section = ET.SubElement(body, "section", id="charts")
        _text(section, "h2", "Charts")
        for chart, table in charts:
            _chart(section, chart, table)
    for name, table in tables.items():
        section = ET.SubElement(body, "section", id=f"table-{name}")
        _text(section, "h2", table.get("title", name))
        _table(section, table, {
            key: anchor for key in table.get("keys") or ()
            if (anchor := case_anchor(key) if name == "timeliness" else case_anchor(name, key)) in cases
        })
    if cases:
        _cases_section(body, cases)
    return "<!DOCTYPE html>\n" + ET.tostring(html, encoding="unicode", method="html") + "\n"


def _report_title(report: Mapping) -> str:
    kind = str(report.get("report", "")).replace("_", " ").capitalize() or "SIR"
    period = report.get("period") or {}
    return f"{kind} report: serious incident reviews, {_date(period.get('from'))} to {_date(period.get('to'))}"


def _date(value: Any) -> str:
    try:
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{day.day} {day:%B %Y}"


def _cases_section(body: ET.Element, cases: Mapping[str, Mapping]) -> None:
    """The drill-down: under each figure and table row, the cases it counts."""
    section = ET.SubElement(body, "section", id="cases")
    _text(section, "h2", "The cases behind each figure")
    for anchor, listed in cases.items():
        part = ET.SubElement(section, "section", id=anchor)
        title = _humanize(listed["figure"]) + (f": {listed['value']}" if listed.get("value") else "")
        _text(part, "h3", f"{title} ({listed['count']} cases)")
        shown = listed["cases"]
        if not shown:
            _text(part, "p", "No cases.")
            continue
        columns = ["case", "council reference", "local authority", "notified on", "review received", "value"]
        _table(part, {"columns": columns, "rows": [
            [c["case_id"], c["council_reference"], c["local_authority"], c["notified_on"],
             c.get("review_received_on"), _cell_value(c["value"])] for c in shown
        ]})
        if listed["count"] > len(shown):
            _text(part, "p", f"{listed['count'] - len(shown)} more: GET /v1/reports/national/cases lists them all.")


def _cell_value(value: Any) -> Any:
    return ("yes" if value else "no") if isinstance(value, bool) else value


def _figures_section(body: ET.Element, figures: Mapping, cases: Mapping[str, Mapping] | None = None) -> None:
    section = ET.SubElement(body, "section", id="figures")
    _text(section, "h2", "Figures")
    table = ET.SubElement(section, "table", {"class": "figures"})
    head = ET.SubElement(ET.SubElement(table, "thead"), "tr")
    for heading, numeric in (("Figure", False), ("Value", True), ("Base", True), ("Percent", True)):
        _text(head, "th", heading, **({"class": "num"} if numeric else {}))
    rows = ET.SubElement(table, "tbody")
    for name, value, base, percent in _figure_rows(figures):
        row = ET.SubElement(rows, "tr", {"data-figure": name})
        anchor = case_anchor(name.split(".")[0])
        if cases and anchor in cases:
            _text(ET.SubElement(row, "th", scope="row"), "a", _humanize(name), href=f"#{anchor}")
        else:
            _text(row, "th", _humanize(name), scope="row")
        _text(row, "td", _number(value), **{"class": "num"})
        _text(row, "td", _number(base), **{"class": "num"})
        _percent_cell(row, percent, value, base)


def _table(section: ET.Element, table: Mapping, links: Mapping[str, str] | None = None) -> None:
    """A table; with `links` (row key -> anchor) each row's first cell links to its cases."""
    columns = list(table["columns"])
    rows = list(table["rows"])
    numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]
    element = ET.SubElement(section, "table", {"aria-label": str(table.get("title", ""))})
    head = ET.SubElement(ET.SubElement(element, "thead"), "tr")
    for column, is_numeric in zip(columns, numeric, strict=True):
        _text(head, "th", column, scope="col", **({"class": "num"} if is_numeric else {}))
    body = ET.SubElement(element, "tbody")
    keys = list(table.get("keys") or [None] * len(rows))
    for row, key in zip(rows, keys, strict=True):
        line = ET.SubElement(body, "tr")
        for index, (column, cell, is_numeric) in enumerate(zip(columns, row, numeric, strict=True)):
            if index == 0 and links and key in links:
                _text(ET.SubElement(line, "td"), "a", _number(cell), href=f"#{links[key]}")
            elif "percent" in str(column).lower() and _is_number(cell):
                _percent_cell(line, cell, *_count_and_base(columns, row, table.get("base")))
            else:
                _text(line, "td", _number(cell), **({"class": "num"} if is_numeric else {}))


def _chart(section: ET.Element, chart: Chart, table: Mapping) -> None:
    """A horizontal bar chart of one table: one bar per row (zeros included), its first
    column the label and `chart.value_column` the length."""
    columns = [str(c).lower() for c in table["columns"]]
    value_at = columns.index(chart.value_column) if chart.value_column in columns else 1
    percent_at = columns.index("percent") if "percent" in columns and value_at != columns.index("percent") else None
    count_at = columns.index("count") if "count" in columns else None
    base_at = columns.index("base") if "base" in columns else None
    rows = [r for r in table["rows"] if r]
    values = [float(r[value_at]) if _is_number(r[value_at]) else 0.0 for r in rows]
    step, ticks = (25.0, 4) if chart.out_of_100 else _ticks(max(values + [0.0]))
    scale = step * ticks

    labels = [str(r[0]) for r in rows]
    label_width = round(min(440.0, max(80.0, _CHAR_WIDTH * max((len(s) for s in labels), default=0))))
    bars_x = label_width + 10
    width = bars_x + _BAR_AREA + _VALUE_AREA
    height = 10 + _ROW_HEIGHT * len(rows) + 24

    figure = ET.SubElement(section, "figure", {"class": "chart", "data-table": chart.table})
    title = table.get("title", chart.table)
    _text(figure, "figcaption", title)
    svg = ET.SubElement(
        figure, "svg",
        {"viewBox": f"0 0 {width} {height}", "width": str(width), "height": str(height),
         "role": "img", "aria-label": title},
    )
    bottom = 10 + _ROW_HEIGHT * len(rows)
    for tick in range(ticks + 1):
        x = bars_x + _BAR_AREA * tick / ticks
        ET.SubElement(svg, "line", {"class": "grid" if tick else "axis", "x1": _f(x), "x2": _f(x), "y1": "6", "y2": str(bottom)})
        _text(svg, "text", _percent(step * tick) if chart.out_of_100 else _number(step * tick),
              x=_f(x), y=str(bottom + 16), **{"text-anchor": "middle", "class": "value"})
    for index, (row, value) in enumerate(zip(rows, values, strict=True)):
        y = 10 + _ROW_HEIGHT * index
        text_y = _f(y + _BAR_HEIGHT / 2 + 4)
        _text(svg, "text", labels[index], x=str(label_width), y=text_y, **{"text-anchor": "end", "class": "label"})
        length = _BAR_AREA * max(0.0, min(value, scale)) / scale
        shown = _percent(row[value_at]) if chart.out_of_100 else _number(row[value_at])
        if percent_at is not None and _is_number(row[percent_at]):
            shown += f" ({_percent(row[percent_at])})"
        if count_at is not None and base_at is not None:
            shown += f" ({_number(row[count_at])} of {_number(row[base_at])})"
        bar = ET.SubElement(
            svg, "rect",
            {"class": "bar", "x": str(bars_x), "y": str(y), "width": _f(length), "height": str(_BAR_HEIGHT),
             "data-label": labels[index], "data-value": _number(row[value_at])},
        )
        _text(bar, "title", f"{labels[index]}: {shown}")
        _text(svg, "text", shown, x=_f(bars_x + length + 6), y=text_y, **{"class": "value"})


def _ticks(largest: float) -> tuple[float, int]:
    """A round step (1, 2 or 5 times a power of ten, at least 1) and how many steps reach
    `largest`: at most 5 gridlines past zero."""
    magnitude = 1.0
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if largest <= 5 * step:
                return step, max(1, math.ceil(largest / step))
        magnitude *= 10


def _text(parent: ET.Element, tag: str, text: Any, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = "" if text is None else str(text)
    return element


def _link(parent: ET.Element, href: str, text: str) -> None:
    _text(ET.SubElement(parent, "li"), "a", text, href=href)


# Words of figure names that read as capitals, as the published report writes them.
_ACRONYMS = {
    w.lower(): w for w in ("SG", "SOG", "MAPPA", "CSWO", "IAR", "SCR", "LSCMI", "CPO", "DTTO", "SA07", "SARA", "RM2000")
}


def _humanize(name: str) -> str:
    words = name.replace(".", ": ").replace("_", " ").capitalize().split(" ")
    return " ".join(_ACRONYMS.get(word.lower(), word) for word in words)


def _timestamp(value: Any) -> str:
    try:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return f"{moment.day} {moment:%B %Y, %H:%M}" + (" UTC" if moment.tzinfo is not None else "")


def _is_ratio(value: Any) -> bool:
    return isinstance(value, Mapping) and "count" in value and set(value) <= set(RATIO_KEYS)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (float, decimal.Decimal)):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def _percent(value: Any) -> str:
    """A percentage as the published report prints it: a whole number, halves up."""
    return f"{_half_up(value, 0)}%" if _is_number(value) else "–"


def _half_up(value: Any, places: int) -> decimal.Decimal:
    return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_UP)


def _count_and_base(columns: list, row: list, table_base: Any = None) -> tuple[Any, Any]:
    """The count and base a row's percentage is of: its own columns, else a share table's
    second column out of the table's base."""
    names = [str(c).lower() for c in columns]
    if "count" in names and "base" in names:
        return row[names.index("count")], row[names.index("base")]
    if table_base is not None and len(row) > 1:
        return row[1], table_base
    return None, None


def _percent_cell(row: ET.Element, percent: Any, count: Any = None, base: Any = None) -> None:
    """A whole percentage (as published), the exact share on hover: `count of base =
    share%` where both are known (the whole number then comes from the exact share, so
    it is rounded once), else the one-decimal figure of the JSON."""
    if not _is_number(percent):
        _text(row, "td", "–", **{"class": "num"})
        return
    if _is_number(count) and _is_number(base) and base:
        exact = decimal.Decimal(count) * 100 / decimal.Decimal(base)
        whole, title = _half_up(exact, 0), f"{_number(count)} of {_number(base)} = {_exact(exact)}%"
    else:
        whole, title = _half_up(percent, 0), f"{_half_up(percent, 1)}%"
    _text(row, "td", f"{whole}%", **{"class": "num", "title": title})


def _exact(share: decimal.Decimal) -> str:
    """A share to at most 4 decimals, without trailing zeros (61.25, 66.6667, 50)."""
    text = f"{share.quantize(decimal.Decimal('0.0001'), rounding=decimal.ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")
