"""History that leaves a case open (SPEC §3, §4, docs/import.md): the casework view shows it
marked `imported`, with its true state and deadlines; a deadline already past due is
breached once, marked imported, and shows as breached in the deadlines API, the casework
view and the quarterly report; actor roles of other systems are kept as given."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from services.deadlines.scheduler import Scheduler
from shared.messaging import DEADLINE_EVENTS, IMPORTED_HEADER
from tests.clocks import FixedClock
from tests.factories import envelope, notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually, find_records, header

NDJSON = {"Content-Type": "application/x-ndjson"}


def _event(event_type, data, case_id, received_at, *, role="council", actor_id="tok_history") -> dict:
    event = envelope(event_type, data, case_id=case_id, local_authority="fife", role=role)
    return event | {"received_at": received_at, "recorded_at": received_at, "actor": {"role": role, "id": actor_id}}


async def _import(platform, tokens, *events) -> dict:
    body = "\n".join(json.dumps(e) for e in events).encode()
    answer = await platform.clients["intake"].post("/v1/import", content=body, headers={**bearer(tokens["admin"]), **NDJSON})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_an_open_imported_case_is_shown_marked_imported_and_its_overdue_deadline_breached_once(platform, tokens):
    case = uuid.uuid4()
    # Notified on Wed 4 June 2014 by a system whose records say `system`; forwarded the
    # next day; no review ever came: review_submission was due at the end of 4 Sep 2014.
    report = await _import(
        platform, tokens,
        _event("incident.notified", notification(incident_date="2014-06-02"), case, "2014-06-04T10:00:00Z", role="system"),
        _event("notification.forwarded", {"recipient": "scottish-government", "channel": "email", "attempts": 1,
                                           "delivered_at": "2014-06-05T09:00:00Z"},
               case, "2014-06-05T09:00:00Z", role="system"),
    )
    assert report == {"imported": 2, "skipped": 0, "rejected": 0, "errors": []}
    inspectorate = bearer(tokens["inspectorate"])

    # Actor roles of another system are kept and shown as they were given.
    shown = (await platform.clients["intake"].get(f"/v1/cases/{case}", headers=inspectorate)).json()
    assert {e["actor"]["role"] for e in shown["events"]} == {"system"}

    async def deadline(rule):
        answer = await platform.clients["deadlines"].get(f"/v1/cases/{case}/deadlines", headers=inspectorate)
        return next((d for d in answer.json()["deadlines"] if d["rule"] == rule), None) if answer.status_code == 200 else None

    await eventually(lambda: deadline("review_submission"), what="deadlines to open the imported case's deadlines")
    # The forwarding record comes on the routing topic: the history has settled once
    # deadlines has applied it too (docs/deadlines.md: the settling time is a wall-clock
    # window, so the test waits for the record rather than racing it under load).
    await eventually(
        lambda: platform.pool.fetchval(
            "SELECT count(*) FROM deadlines.processed_events WHERE topic = 'sir.routing.v1'"
            " AND event_id IN (SELECT event_id FROM intake.events WHERE case_id = $1)", uuid.UUID(str(case))),
        what="deadlines to apply the imported forwarding record",
    )
    # The history has settled: once the imported case's settling time has passed the
    # scheduler breaches what is still open and past due (driven here with a clock).
    now = await platform.pool.fetchval("SELECT now()")
    settle = dt.timedelta(seconds=platform.settings.import_settle_seconds)
    await Scheduler(FixedClock(now + 2 * settle)).run_until_idle(platform.pool)
    await Scheduler(FixedClock(now + 4 * settle)).run_until_idle(platform.pool)
    breached = await deadline("review_submission")
    assert breached["status"] == "breached" and breached["breached_at"] == breached["due_at"]
    assert (await deadline("sg_forward"))["status"] == "met"

    listed = await platform.clients["deadlines"].get(
        "/v1/deadlines", params={"status": "breached", "local_authority": "fife", "limit": 500}, headers=inspectorate
    )
    assert [d["rule"] for d in listed.json()["deadlines"] if d["case_id"] == str(case)] == ["review_submission"]
    # One deadline.breached on the topic, carrying the imported mark.
    def breach_of_case(record):
        event = json.loads(record.value)
        return event["case_id"] == str(case) and event["event_type"] == "deadline.breached"

    [breach] = await find_records(platform.settings.kafka_bootstrap, DEADLINE_EVENTS, breach_of_case)
    assert header(breach, IMPORTED_HEADER) == "true"

    async def in_casework(**params):
        answer = await platform.clients["reporting"].get(
            "/v1/cases", params={"limit": 500, "local_authority": "fife", **params}, headers=inspectorate
        )
        assert answer.status_code == 200, answer.text
        return next((c for c in answer.json() if c["case_id"] == str(case)), None)

    async def shown_breached():
        found = await in_casework()
        return found if found and any(d["status"] == "breached" for d in found["deadlines"]) else None

    found = await eventually(shown_breached, what="the casework view to show the imported case's breach")
    assert found["imported"] is True and found["state"] == "notified" and found["overdue"] is True
    assert [(d["rule"], d["status"]) for d in found["deadlines"]] == [("review_submission", "breached")]
    assert await in_casework(source="imported") is not None
    assert await in_casework(source="live") is None
    bad = await platform.clients["reporting"].get("/v1/cases", params={"source": "elsewhere"}, headers=inspectorate)
    assert bad.status_code == 422

    quarterly = await platform.clients["reporting"].get("/v1/reports/quarterly/2014/Q3", headers=inspectorate)
    rows = {row[0]: row[1:] for row in quarterly.json()["tables"]["by_authority"]["rows"]}
    assert rows["Fife"][3] >= 1  # breaches: review_submission fell due in Q3 2014, never met


async def test_a_live_case_is_shown_as_live(platform, tokens):
    answer = await platform.clients["intake"].post("/v1/notifications", json=notification(), headers=bearer(tokens["fife"]))
    case = answer.json()["case_id"]

    async def shown():
        listed = await platform.clients["reporting"].get(
            "/v1/cases", params={"source": "live", "limit": 500}, headers=bearer(tokens["fife"])
        )
        return next((c for c in listed.json() if c["case_id"] == case), None)

    assert (await eventually(shown, what="the live case in the casework view"))["imported"] is False
