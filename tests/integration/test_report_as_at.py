"""Reports never count the future (SPEC §6): a report for a period still running is
computed as at the moment it is made (an injected clock here: no sleeping), with `as_at`
and `complete: false`; nothing not yet due counts as breached or overdue."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from services.reporting.queries import compute_national, compute_quarterly
from services.reporting.render import render
from tests.factories import envelope, notification, review
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually

UTC = dt.timezone.utc
NDJSON = {"Content-Type": "application/x-ndjson"}
# The observation: the Q4 2026 report made on St Andrew's Day.
ST_ANDREWS_DAY = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _event(event_type, data, case_id, received_at, role="council") -> dict:
    event = envelope(event_type, data, case_id=case_id, local_authority="orkney-islands", role=role)
    return event | {"received_at": received_at, "recorded_at": received_at}


def _orkney(report) -> list:
    return next(row[1:] for row in report["tables"]["by_authority"]["rows"] if row[0] == "Orkney Islands")


async def test_a_running_quarter_counts_only_what_has_fallen_due(platform, tokens):
    case = uuid.uuid4()
    # Notified 2 Nov 2026, forwarded at once; a review on 27 Nov: the Inspectorate's
    # response is due by the end of 27 December, inside Q4 but after 30 November.
    lines = [
        _event("incident.notified", notification(incident_date="2026-10-30"), case, "2026-11-02T10:00:00Z"),
        _event("notification.forwarded", {"recipient": "scottish-government", "channel": "email", "attempts": 1,
                                          "delivered_at": "2026-11-02T11:00:00Z"}, case, "2026-11-02T11:00:00Z",
               role="service"),
        _event("review.submitted", review(), case, "2026-11-27T10:00:00Z"),
    ]
    answer = await platform.clients["intake"].post(
        "/v1/import", content="\n".join(map(json.dumps, lines)).encode(), headers={**bearer(tokens["admin"]), **NDJSON}
    )
    assert answer.json()["imported"] == 3, answer.text

    async def projected():
        # The response's deadline is open, and the forwarding's is met: the forwarding record
        # comes on the routing topic, and until deadlines has met it from there the report
        # would count it overdue (a loaded CI run read it then).
        return await platform.pool.fetchval(
            "SELECT count(*) FILTER (WHERE rule = 'inspectorate_response') = 1"
            " AND count(*) FILTER (WHERE rule = 'sg_forward' AND met_at IS NOT NULL) = 1"
            " FROM reporting.deadlines WHERE case_id = $1", case
        )

    await eventually(projected, what="reporting to hold the response's deadline and the forwarding met")

    running = await compute_quarterly(platform.pool, 2026, 4, now=ST_ANDREWS_DAY)
    assert (running["complete"], running["as_at"]) == (False, ST_ANDREWS_DAY.isoformat())
    notifications, open_cases, overdue, breaches = _orkney(running)
    assert (notifications, open_cases, overdue, breaches) == (1, 1, 0, 0)
    assert "Inspectorate response to a review" not in [r[0] for r in running["tables"]["breaches_by_rule"]["rows"]]
    csv_body = render(running, "csv")[0].decode()
    assert "figures to 30 November 2026, 12:00 UTC; the quarter is still running" in csv_body
    assert "Figures to 30 November 2026, 12:00 UTC; the quarter is still running" in render(running, "html")[0].decode()

    ended = await compute_quarterly(platform.pool, 2026, 4, now=dt.datetime(2027, 1, 10, tzinfo=UTC))
    assert (ended["complete"], ended["as_at"]) == (True, "2027-01-01T00:00:00+00:00")
    assert _orkney(ended) == [1, 1, 1, 1]  # the response never came: overdue and breached
    assert "Inspectorate response to a review" in [r[0] for r in ended["tables"]["breaches_by_rule"]["rows"]]

    national = await compute_national(platform.pool, dt.date(2026, 11, 1), dt.date(2026, 11, 30), now=ST_ANDREWS_DAY)
    assert (national["complete"], national["as_at"]) == (False, ST_ANDREWS_DAY.isoformat())


async def test_the_api_report_of_the_current_quarter_says_it_is_still_running(platform, tokens):
    now = await platform.pool.fetchval("SELECT now()")
    quarter = (now.month - 1) // 3 + 1
    answer = await platform.clients["reporting"].get(
        f"/v1/reports/quarterly/{now.year}/Q{quarter}", headers=bearer(tokens["inspectorate"])
    )
    body = answer.json()
    assert body["complete"] is False and dt.datetime.fromisoformat(body["as_at"]) >= now
    html = await platform.clients["reporting"].get(
        f"/v1/reports/quarterly/{now.year}/Q{quarter}", params={"format": "html"}, headers=bearer(tokens["inspectorate"])
    )
    assert "the quarter is still running" in html.text
    past = await platform.clients["reporting"].get(
        "/v1/reports/national", params={"from": "2014-01-01", "to": "2014-12-31"}, headers=bearer(tokens["inspectorate"])
    )
    assert past.json()["complete"] is True and past.json()["as_at"] == "2015-01-01T00:00:00+00:00"


async def test_the_vocabularies_endpoint_gives_every_value_with_its_published_label(platform, tokens):
    answer = await platform.clients["reporting"].get("/v1/vocabularies", headers=bearer(tokens["fife"]))
    assert answer.status_code == 200, answer.text
    vocabularies = answer.json()
    assert {"value": "murder_perpetrator", "label": "Murder (perpetrator)"} in vocabularies["incident_type"]
    assert {"value": "cpo_unpaid_work_only", "label": "CPO (unpaid work only)"} in vocabularies["order_type"]
    assert {"value": "lscmi", "label": "LSCMI"} in vocabularies["risk_tool"]
    assert {v["value"] for v in vocabularies["rule"]} >= {"notification", "inspectorate_response"}


async def test_deadlines_and_reporting_agree_on_a_notification_received_on_st_andrews_day(platform, tokens):
    """The observation: incident Friday 20 November 2026, received Monday 30 November (St
    Andrew's Day, a holiday). Deadlines said 1 working day late and a breach; the report
    said in time with 5 working days. Both now say in time, 5 working days."""
    case = uuid.uuid4()
    line = _event("incident.notified", notification(incident_date="2026-11-20"), case, "2026-11-30T10:00:00Z")
    answer = await platform.clients["intake"].post(
        "/v1/import", content=json.dumps(line).encode(), headers={**bearer(tokens["admin"]), **NDJSON}
    )
    assert answer.json()["imported"] == 1, answer.text

    async def notification_deadline():
        answer = await platform.clients["deadlines"].get(
            f"/v1/cases/{case}/deadlines", headers=bearer(tokens["inspectorate"])
        )
        if answer.status_code != 200:
            return None
        return next((d for d in answer.json()["deadlines"] if d["rule"] == "notification" and d["status"] == "met"), None)

    deadline = await eventually(notification_deadline, what="the notification deadline to be judged")
    assert deadline["working_days_late"] == 0 and deadline["due_at"] == "2026-12-01T00:00:00Z"
    taken = await eventually(lambda: platform.pool.fetchval(
        "SELECT working_days_taken FROM reporting.notifications WHERE case_id = $1", case
    ), what="reporting to count the notification")
    assert taken == 5
