"""Categorisation quality over HTTP: intake's 201 lists what a notification leaves missing
or vague as `warnings` (still accepted), and the reports count them per authority, the
quarterly report listing them for follow-up, and the drill-down listing their cases."""

from __future__ import annotations

import datetime as dt

from tests.factories import notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually


async def test_warnings_in_the_answer_and_counts_in_the_reports(platform, tokens):
    today = await platform.pool.fetchval("SELECT (now() AT TIME ZONE 'Europe/London')::date")
    body = notification(
        council_reference="CAT-VAGUE-1", incident_type="other", incident_date=(today - dt.timedelta(days=30)).isoformat(),
    )
    del body["domestic_abuse_aggravated"]  # not known (schema version 2)
    answer = await platform.clients["intake"].post("/v1/notifications", json=body, headers=bearer(tokens["inverclyde"]))
    assert answer.status_code == 201, answer.text
    assert [w["field"] for w in answer.json()["warnings"]] == ["incident_type_detail", "became_aware_date"]
    complete = await platform.clients["intake"].post(
        "/v1/notifications", json=notification(council_reference="CAT-FINE-1", incident_date=today.isoformat()),
        headers=bearer(tokens["inverclyde"]),
    )
    assert complete.status_code == 201 and complete.json()["warnings"] == []
    case = await platform.clients["intake"].get(f"/v1/cases/{answer.json()['case_id']}", headers=bearer(tokens["inspectorate"]))
    assert case.json()["events"][0]["schema_version"] == 2
    assert case.json()["events"][0]["data"].get("domestic_abuse_aggravated") is None

    period = {"from": today.isoformat(), "to": today.isoformat()}
    reporting = platform.clients["reporting"]

    async def applied():
        return await platform.pool.fetchval(
            "SELECT count(*) FROM reporting.notifications WHERE case_id = ANY($1::uuid[])",
            [answer.json()["case_id"], complete.json()["case_id"]],
        ) == 2

    await eventually(applied, timeout=30, what="reporting to apply both notifications")
    report = (await reporting.get("/v1/reports/national", params=period, headers=bearer(tokens["admin"]))).json()
    columns = report["tables"]["categorisation_by_authority"]["columns"]
    row = dict(zip(report["tables"]["categorisation_by_authority"]["keys"],
                   report["tables"]["categorisation_by_authority"]["rows"], strict=True))["inverclyde"]
    assert row[columns.index("missing: incident_type_detail")] >= 1
    assert report["figures"]["notifications_with_incomplete_categorisation"]["count"] >= 1

    listed = (await reporting.get("/v1/reports/national/cases", params=period | {
        "figure": "notifications_with_incomplete_categorisation"}, headers=bearer(tokens["inverclyde"]))).json()
    mine = [c for c in listed["cases"] if c["council_reference"] == "CAT-VAGUE-1"]
    assert mine and mine[0]["value"] == "incident_type_detail, became_aware_date"
    assert all(c["council_reference"] != "CAT-FINE-1" for c in listed["cases"])

    quarter = (today.month - 1) // 3 + 1
    quarterly = (await reporting.get(f"/v1/reports/quarterly/{today.year}/Q{quarter}",
                                     headers=bearer(tokens["inspectorate"]))).json()
    follow_up = quarterly["tables"]["categorisation_follow_up"]["rows"]
    assert ["Inverclyde", "CAT-VAGUE-1", today.isoformat(), "incident_type_detail, became_aware_date"] in follow_up


async def test_an_event_recorded_after_as_of_changes_nothing(platform, tokens):
    """A live case: notified, then found not to meet the criteria. As of a moment between
    the two, the case is notified and not assessed; as known now, it does not meet them."""
    intake, reporting = platform.clients["intake"], platform.clients["reporting"]
    today = await platform.pool.fetchval("SELECT (now() AT TIME ZONE 'Europe/London')::date")
    notified = await intake.post("/v1/notifications", json=notification(
        council_reference="ASOF-1", incident_date=today.isoformat()), headers=bearer(tokens["fife"]))
    assert notified.status_code == 201, notified.text
    case_id = notified.json()["case_id"]

    async def row(field: str):
        return await platform.pool.fetchrow(f"SELECT {field} FROM reporting.notifications WHERE case_id = $1", case_id)

    await eventually(lambda: row("case_id"), what="reporting to apply the notification")
    between = await platform.pool.fetchval("SELECT now()")
    assessed = await intake.post(f"/v1/cases/{case_id}/events", headers=bearer(tokens["inspectorate"]), json={
        "event_type": "notification.criteria_assessed", "data": {"meets_criteria": False}})
    assert assessed.status_code == 201, assessed.text

    async def closed():
        found = await row("closed_reason")
        return found is not None and found["closed_reason"] == "criteria_not_met"

    await eventually(closed, what="reporting to apply the assessment")
    period = {"from": today.isoformat(), "to": today.isoformat(), "local_authority": "fife"}

    async def listed(figure: str, **params) -> set[str]:
        answer = await reporting.get("/v1/reports/national/cases", headers=bearer(tokens["inspectorate"]),
                                     params=period | {"figure": figure} | params)
        assert answer.status_code == 200, answer.text
        return {c["case_id"] for c in answer.json()["cases"]}

    assert case_id in await listed("notifications_not_meeting_criteria")
    assert case_id not in await listed("notifications_not_meeting_criteria", as_of=between.isoformat())
    assert case_id in await listed("notifications", as_of=between.isoformat())
    before = (await platform.pool.fetchval("SELECT now()")) - dt.timedelta(hours=1)
    assert case_id not in await listed("notifications", as_of=before.isoformat())
