"""Issue 16 on the 2013–15 fixture, imported through `POST /v1/import` in two batches
recorded at different moments (the events received before July 2014, then the rest):

- drill-down: every figure and every table row of the national report lists exactly the
  cases it counts (received and cohort basis alike); a council sees only its own cases,
  a SOG none; the HTML page links each figure and row to its list;
- as known then: the report as of a moment between the batches is the report the first
  batch alone gave (what was recorded after it changes nothing);
- cohort: the reviews and responses of the period's notifications, whenever they came,
  counted from the fixture's lines independently.

The services run on a broker of their own, as in test_report_acceptance.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from services.reporting import commands, repository
from services.reporting.queries import compute_all_cases, compute_cases, compute_national
from shared import devstack
from shared.auth import issue_token
from shared.calendar import local_date
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually

FIXTURE = Path(__file__).parents[1] / "fixtures" / "seed_2013_2015.ndjson"
PERIOD = {"from": "2013-06-01", "to": "2015-01-31"}
SPLIT = "2014-07-01"  # the first batch: events received before this day
# The first seven months, whose reviews and responses differ between the two bases.
HALF = {"from": "2013-06-01", "to": "2013-12-31"}


def _lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


async def _applied(platform) -> int:
    return await platform.pool.fetchval(
        "SELECT count(*) FROM reporting.processed_events WHERE consumer = ANY($1::text[])",
        [commands.consumer_name(CASE_EVENTS), commands.consumer_name(ROUTING_EVENTS)],
    )


@pytest.fixture(scope="module")
async def imported(infra):
    first = [line for line in _lines() if json.loads(line)["received_at"] < SPLIT]
    second = [line for line in _lines() if json.loads(line)["received_at"] >= SPLIT]
    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ("intake", "reporting")) as platform:
            admin = await issue_token(platform.pool, "admin")
            platform.tokens = {
                "admin": admin,
                "inspectorate": await issue_token(platform.pool, "inspectorate"),
                "glasgow": await issue_token(platform.pool, "council", local_authority="glasgow-city"),
                "sog": await issue_token(platform.pool, "sog", region="north-strathclyde"),
            }
            done = 0
            platform.first_batch = {}
            for batch in (first, second):
                answer = await platform.clients["intake"].post(
                    "/v1/import", content="\n".join(batch).encode(),
                    headers={**bearer(admin), "Content-Type": "application/x-ndjson"},
                )
                assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text
                done += len(batch)

                async def settled(expected=done) -> bool:
                    return await _applied(platform) == expected

                await eventually(settled, timeout=90, what="reporting to apply the imported batch")
                if batch is first:
                    platform.first_batch = {
                        "national": (await get(platform, "/v1/reports/national", PERIOD)).json(),
                        "half": (await get(platform, "/v1/reports/national", HALF | {"basis": "cohort"})).json(),
                        "listed": (await get(platform, "/v1/reports/national/cases",
                                              PERIOD | {"figure": "notifications"})).json(),
                    }
                    platform.between = await platform.pool.fetchval("SELECT now()")
            yield platform


async def get(platform, path: str, params: dict, token: str = "admin"):
    return await platform.clients["reporting"].get(path, params=params, headers=bearer(platform.tokens[token]))


async def listed(platform, params: dict, figure: str, value: str | None = None, token: str = "admin") -> dict:
    answer = await get(platform, "/v1/reports/national/cases",
                       params | {"figure": figure} | ({"value": value} if value is not None else {}), token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _expected(figure: str, value) -> int:
    return value["count"] if isinstance(value, dict) and "count" in value else value


async def _every_figure_lists_its_cases(platform, params: dict) -> int:
    report = (await get(platform, "/v1/reports/national", params)).json()
    checked = 0
    for figure, value in report["figures"].items():
        if figure not in repository.FIGURE_CASES:
            continue
        cases = (await listed(platform, params, figure))["cases"]
        if figure == "authorities_notifying":
            assert len({c["local_authority"] for c in cases}) == value, figure
        elif figure == "additional_info_requests":
            assert sum(c["value"] for c in cases) == value, figure  # a sum of requests
        elif figure == "late_notification_working_days":
            assert len(cases) == report["figures"]["notified_late"]["count"]
            if cases:
                assert min(c["value"] for c in cases) == value["min"] and max(c["value"] for c in cases) == value["max"]
        else:
            assert len(cases) == _expected(figure, value), figure
        checked += 1
    for name, table in report["tables"].items():
        if name not in repository.TABLE_CASES:
            continue
        count_at = 2 if name == "notifications_by_mappa" else 1  # the column of the row's cases
        for key, row in zip(table["keys"], table["rows"], strict=True):
            cases = (await listed(platform, params, name, key))["cases"]
            assert len(cases) == row[count_at], (name, key)
            checked += 1
    # every figure of the report that counts cases has a list
    missing = {f for f in report["figures"] if f not in repository.FIGURE_CASES}
    assert missing <= {"open_cases_at_quarter_end", "overdue_items_at_quarter_end", "deadlines_breached"}, missing
    return checked


async def test_every_figure_and_table_row_lists_exactly_its_cases(imported):
    report = (await get(imported, "/v1/reports/national", PERIOD)).json()
    assert report["figures"]["notifications"] == 111 and report["figures"]["reviews"] == 80
    assert await _every_figure_lists_its_cases(imported, PERIOD) > 100


async def test_the_cohort_basis_lists_its_cases_too(imported):
    assert await _every_figure_lists_its_cases(imported, HALF | {"basis": "cohort"}) > 100
    assert await _every_figure_lists_its_cases(imported, HALF) > 100


async def test_a_listed_case_says_who_when_and_why(imported):
    answer = await listed(imported, PERIOD, "notified_late")
    case = answer["cases"][0]
    assert set(case) >= {"case_id", "council_reference", "local_authority", "incident_date", "notified_on", "value"}
    assert case["council_reference"] and case["value"] > 5  # the working days that made it late
    reviews = await listed(imported, PERIOD, "reviews_within_3_months")
    assert all(c["review_received_on"] <= c["value"] for c in reviews["cases"])  # received by the last day in time


def _fixture_bases(period: dict) -> dict[str, int]:
    """Reviews and responses of the period, counted from the fixture's lines: received in the
    period, or of the notifications received in it (cohort)."""
    events = [json.loads(line) for line in _lines()]
    day = lambda e: local_date(dt.datetime.fromisoformat(e["received_at"])).isoformat()  # noqa: E731
    within = lambda e: period["from"] <= day(e) <= period["to"]  # noqa: E731
    cohort = {e["case_id"] for e in events if e["event_type"] == "incident.notified" and within(e)}
    counts = Counter()
    for e in events:
        kind = {"review.submitted": "reviews", "review.responded": "responses"}.get(e["event_type"])
        if kind:
            counts[f"{kind}_received"] += within(e)
            counts[f"{kind}_cohort"] += e["case_id"] in cohort
    return counts


async def test_received_and_cohort_bases_count_what_the_docs_say(imported):
    expected = _fixture_bases(HALF)
    received = (await get(imported, "/v1/reports/national", HALF)).json()
    cohort = (await get(imported, "/v1/reports/national", HALF | {"basis": "cohort"})).json()
    assert received["basis"] == "received" and cohort["basis"] == "cohort"
    assert received["figures"]["reviews"] == expected["reviews_received"]
    assert received["figures"]["inspectorate_responses"] == expected["responses_received"]
    assert cohort["figures"]["reviews"] == expected["reviews_cohort"]
    assert cohort["figures"]["inspectorate_responses"] == expected["responses_cohort"]
    assert expected["reviews_received"] != expected["reviews_cohort"]  # the period tells them apart
    # The notifications' own figures are the same on both bases.
    assert cohort["figures"]["notifications"] == received["figures"]["notifications"]


def _without_moments(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("generated_at", "as_of", "as_at")}


async def test_as_of_between_the_batches_gives_the_first_batchs_report(imported):
    between = imported.between.isoformat()
    now = (await get(imported, "/v1/reports/national", PERIOD)).json()
    then = (await get(imported, "/v1/reports/national", PERIOD | {"as_of": between})).json()
    assert then["as_of"] == dt.datetime.fromisoformat(between).isoformat()
    assert _without_moments(then) == _without_moments(imported.first_batch["national"])
    assert then["figures"] != now["figures"]  # the second batch is counted today, not then
    # The second batch changed rows the first made (responses, closings): their first
    # versions are what was known then.
    for table in ("notifications", "reviews"):
        assert await imported.pool.fetchval(f"SELECT count(*) FROM reporting.{table}_versions") > 0
    half = (await get(imported, "/v1/reports/national", HALF | {"basis": "cohort", "as_of": between})).json()
    assert _without_moments(half) == _without_moments(imported.first_batch["half"])
    # The drill-down as of then lists the cases known then.
    listed_then = await listed(imported, PERIOD | {"as_of": between}, "notifications")
    assert listed_then["cases"] == imported.first_batch["listed"]["cases"]
    # Before anything was recorded, nothing was known.
    empty = (await get(imported, "/v1/reports/national", PERIOD | {"as_of": "2020-01-01T00:00:00Z"})).json()
    assert empty["figures"]["notifications"] == 0 and empty["figures"]["reviews"] == 0
    html = (await get(imported, "/v1/reports/national", PERIOD | {"as_of": between, "format": "html"})).text
    assert "as known on" in html


async def test_a_council_lists_only_its_own_cases_and_a_sog_none(imported):
    every = await listed(imported, PERIOD, "notifications", token="inspectorate")
    glasgow = await listed(imported, PERIOD, "notifications", token="glasgow")
    assert glasgow["count"] == 18 and {c["local_authority"] for c in glasgow["cases"]} == {"glasgow-city"}
    assert every["count"] == 111
    other = await get(imported, "/v1/reports/national/cases", PERIOD | {"figure": "notifications",
                                                                        "local_authority": "fife"}, "glasgow")
    assert other.status_code == 403
    assert (await get(imported, "/v1/reports/national/cases", PERIOD | {"figure": "notifications"}, "sog")).status_code == 403


async def test_an_unknown_figure_or_a_missing_row_is_a_422_naming_it(imported):
    answer = await get(imported, "/v1/reports/national/cases", PERIOD | {"figure": "nonsense"})
    assert answer.status_code == 422 and "nonsense" in answer.text
    answer = await get(imported, "/v1/reports/national/cases", PERIOD | {"figure": "review_findings"})
    assert answer.status_code == 422 and "value" in answer.text


async def test_the_html_pages_lists_are_each_figures_own_drill_down(imported):
    """The HTML page's drill-down section (all counts of a kind in one scan, each list cut
    at its limit) lists, for every figure and row, what that figure's own drill-down lists."""
    between = imported.between
    for params, as_of, basis, local_authority in (
        (PERIOD, None, "received", None), (PERIOD, None, "received", "glasgow-city"),
        (HALF, None, "cohort", None), (PERIOD, between, "received", None), (PERIOD, between, "cohort", "fife"),
    ):
        period = dt.date.fromisoformat(params["from"]), dt.date.fromisoformat(params["to"])
        report = await compute_national(imported.pool, *period, as_of=as_of, basis=basis)
        pages = await compute_all_cases(imported.pool, report, local_authority, 3)
        now = dt.datetime.fromisoformat(report["generated_at"])
        checked = 0
        for anchor, page in pages.items():
            own = await compute_cases(imported.pool, *period, page["figure"], page["value"], local_authority, now,
                                      as_of, basis, limit=3)
            assert page == own, anchor
            checked += bool(page["count"])
        assert checked > 20 if local_authority is None else checked > 5


async def test_the_html_page_links_every_figure_and_row_to_its_cases(imported):
    html = (await get(imported, "/v1/reports/national", PERIOD | {"format": "html"}, "inspectorate")).text
    ids = set(re.findall(r' id="([^"]+)"', html))
    links = set(re.findall(r' href="#(cases-[^"]+)"', html))
    assert links and links <= ids
    national = (await get(imported, "/v1/reports/national", PERIOD)).json()["figures"]
    for figure in repository.FIGURE_CASES:
        assert (f"cases-{figure}" in links) == (figure in national), figure  # the quarterly's own: not here
    assert "cases-notifications_by_authority--glasgow-city" in links
    assert "cases-review_findings--" in " ".join(links)
    # A reader who may not see cases gets the page without them.
    sog = (await get(imported, "/v1/reports/national", PERIOD | {"format": "html"}, "sog")).text
    assert 'id="cases"' not in sog


async def test_reporting_patterns_per_authority(imported):
    answer = await get(imported, "/v1/reports/reporting-patterns", PERIOD, "sog")  # aggregate: any token
    assert answer.status_code == 200, answer.text
    body = answer.json()
    by_slug = {a["local_authority"]: a for a in body["authorities"]}
    assert len(by_slug) == 32 and body["national"]["notifications"] == 111
    # June 2013 to January 2015 touches 8 calendar quarters; Orkney notified in none
    orkney = by_slug["orkney-islands"]
    assert (orkney["quarters"], orkney["quarters_with_none"], orkney["longest_run_with_none"]) == (8, 8, 8)
    assert by_slug["glasgow-city"]["notifications"] == 18
    # The shipped caseload file holds the national total only: a national rate, no flags.
    assert body["national"]["rate_per_1000"] is not None
    assert not any(a["flagged"] for a in body["authorities"]) and by_slug["fife"]["rate_per_1000"] is None
    report = (await get(imported, "/v1/reports/national", PERIOD)).json()
    table = report["tables"]["reporting_patterns"]
    assert len(table["rows"]) == 32 and table["keys"][0] in by_slug
    html = (await get(imported, "/v1/reports/national", PERIOD | {"format": "html"})).text
    assert 'id="table-reporting_patterns"' in html and "quarters with none" in html.lower()


async def test_learning_themes_by_year_and_by_authority(imported):
    report = (await get(imported, "/v1/reports/national", PERIOD)).json()
    tables = report["tables"]
    overall = {row[0]: row[1] for row in tables["review_findings"]["rows"]}
    by_year = tables["review_findings_by_year"]
    years = by_year["columns"][1:-1]
    assert by_year["columns"][0] == "finding" and by_year["columns"][-1] == "total"
    assert years == sorted(years) and years[0] == "2013"
    # Each theme's years add up to its total, and the totals are the review findings table's.
    for row in by_year["rows"]:
        assert sum(row[1:-1]) == row[-1] == overall[row[0]]
    by_authority = tables["review_findings_by_authority"]
    assert sum(row[-1] for row in by_authority["rows"]) == sum(overall.values())
    top = tables["top_learning_themes_over_time"]["rows"]
    themes = list(dict.fromkeys(row[0].rsplit(", ", 1)[0] for row in top))
    assert len(themes) == 5 and [overall[t] for t in themes] == sorted(overall.values(), reverse=True)[:5]
    assert len(top) == 5 * len(years)
    html = (await get(imported, "/v1/reports/national", PERIOD | {"format": "html"})).text
    assert "most frequent learning themes" in html
