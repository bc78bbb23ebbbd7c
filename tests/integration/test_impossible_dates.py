"""Dates that cannot be (SPEC §4): refused live with a 422 naming the field, and in
imported history (against each event's own received_at) with the line number."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.factories import envelope, notification
from tests.integration.conftest import bearer

NDJSON = {"Content-Type": "application/x-ndjson"}


async def _events_stored(platform) -> int:
    return await platform.pool.fetchval("SELECT count(*) FROM intake.events")


async def _notify(platform, token, body):
    return await platform.clients["intake"].post("/v1/notifications", json=body, headers=bearer(token))


@pytest.mark.parametrize(
    ("dates", "field", "words"),
    [
        # The observation: an incident of 15 January 2027 notified on 30 November 2026.
        ({"incident_date": "2027-01-15"}, "incident_date", "after the day received"),
        # 9999-12-31 overflowed the deadlines consumer before it was refused here.
        ({"incident_date": "9999-12-31"}, "incident_date", "after the day received"),
        ({"incident_date": "2026-11-02", "became_aware_date": "2099-01-01"}, "became_aware_date", "after the day received"),
        ({"incident_date": "2026-11-02", "became_aware_date": "2026-10-30"}, "became_aware_date", "before incident_date"),
        ({"incident_date": "1989-12-31"}, "incident_date", "before 1990-01-01"),
        ({"incident_date": "0001-01-01"}, "incident_date", "before 1990-01-01"),
    ],
)
async def test_a_notification_with_a_date_that_cannot_be_is_422_naming_the_field(platform, tokens, dates, field, words):
    before = await _events_stored(platform)
    answer = await _notify(platform, tokens["glasgow"], notification(**dates))
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert [tuple(e["loc"]) for e in errors] == [("body", field)]
    assert words in errors[0]["msg"]
    assert await _events_stored(platform) == before


async def test_today_and_the_floor_itself_are_accepted(platform, tokens):
    today = await platform.pool.fetchval("SELECT (now() AT TIME ZONE 'Europe/London')::date")
    answer = await _notify(platform, tokens["glasgow"], notification(incident_date=today.isoformat()))
    assert answer.status_code == 201, answer.text
    floor = await _notify(platform, tokens["glasgow"], notification(incident_date="1990-01-01", historical=True))
    assert floor.status_code == 201, floor.text


def _line(case_id, received_at, **dates) -> str:
    event = envelope("incident.notified", notification(**dates), case_id=case_id, local_authority="glasgow-city")
    return json.dumps(event | {"received_at": received_at, "recorded_at": received_at})


async def test_imported_history_is_judged_against_each_events_own_received_at(platform, tokens):
    good, after, aware, floor = (uuid.uuid4() for _ in range(4))
    body = "\n".join([
        _line(good, "2014-03-05T10:00:00Z", incident_date="2014-03-01"),
        _line(after, "2014-03-05T10:00:00Z", incident_date="2014-03-06"),  # after its own receipt, though long past now
        _line(aware, "2014-03-05T10:00:00Z", incident_date="2014-03-01", became_aware_date="2014-02-01"),
        _line(floor, "2014-03-05T10:00:00Z", incident_date="1985-06-01"),
    ]).encode()
    answer = await platform.clients["intake"].post("/v1/import", content=body, headers={**bearer(tokens["admin"]), **NDJSON})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["imported"] == 1 and report["rejected"] == 3
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert set(reasons) == {2, 3, 4}
    assert "data.incident_date" in reasons[2] and "after the day received, 2014-03-05" in reasons[2]
    assert "data.became_aware_date" in reasons[3] and "before incident_date" in reasons[3]
    assert "data.incident_date" in reasons[4] and "before 1990-01-01" in reasons[4]
    rows = await platform.pool.fetch("SELECT case_id FROM intake.events WHERE case_id = ANY($1)", [good, after, aware, floor])
    stored = {r["case_id"] for r in rows}
    assert stored == {good}
