"""Intake over HTTP against real PostgreSQL: tokens, scopes, validation, state, idempotency."""

import json
import uuid

import pytest

from shared.auth import issue_token, revoke_token
from shared.lifecycle import fold
from shared.messaging import CASE_EVENTS
from tests.factories import mappa_notification, notification, review
from tests.integration.conftest import bearer
from tests.integration.helpers import find_records, header


async def _notify(platform, token, body=None, **headers):
    return await platform.clients["intake"].post(
        "/v1/notifications", json=body or notification(), headers={**bearer(token), **headers}
    )


async def _post(platform, token, case_id, event_type, data, **headers):
    return await platform.clients["intake"].post(
        f"/v1/cases/{case_id}/events", json={"event_type": event_type, "data": data},
        headers={**bearer(token), **headers},
    )


async def _events_stored(platform) -> int:
    return await platform.pool.fetchval("SELECT count(*) FROM intake.events")


async def test_a_council_notifies_and_reads_its_case(platform, tokens):
    answer = await _notify(platform, tokens["glasgow"])
    assert answer.status_code == 201, answer.text
    case_id = answer.json()["case_id"]
    assert answer.headers["Location"] == f"/v1/cases/{case_id}"

    case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["glasgow"]))
    assert case.status_code == 200
    body = case.json()
    assert body["state"] == "notified" and body["local_authority"] == "glasgow-city"
    [event] = body["events"]
    assert event["event_type"] == "incident.notified" and event["actor"]["role"] == "council"
    assert event["data"]["incident_type"] == "serious_assault"
    # Stored with its outbox row in the same transaction; the relay may have sent it already.
    assert await platform.pool.fetchval(
        "SELECT count(*) FROM intake.events WHERE event_id = $1", uuid.UUID(event["event_id"])
    ) == 1


async def test_the_review_path_over_http(platform, tokens):
    case_id = (await _notify(platform, tokens["glasgow"])).json()["case_id"]
    steps = [
        ("inspectorate", "notification.criteria_assessed", {"meets_criteria": True}, "notified"),
        ("glasgow", "review.submitted", review(), "under_review"),
        ("inspectorate", "review.additional_info_requested", {"note": "risk management plan"}, "awaiting_information"),
        ("glasgow", "review.additional_info_provided", {}, "under_review"),
        ("inspectorate", "review.responded", {"outcome": "concluded", "high_quality": True}, "concluded"),
        ("inspectorate", "case.closed", {"reason": "concluded"}, "closed"),
    ]
    for who, event_type, data, state in steps:
        answer = await _post(platform, tokens[who], case_id, event_type, data)
        assert answer.status_code == 201, (event_type, answer.text)
        assert answer.json()["state"] == state

    # Each case event numbered in commit order (SPEC §3 `sequence`), shown by GET.
    case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["glasgow"]))
    assert [e["sequence"] for e in case.json()["events"]] == [1, 2, 3, 4, 5, 6, 7]
    stored = await platform.pool.fetch(
        "SELECT sequence, envelope->'sequence' AS in_envelope FROM intake.events WHERE case_id = $1 ORDER BY position",
        uuid.UUID(case_id),
    )
    assert [(r["sequence"], r["in_envelope"]) for r in stored] == [(n, n) for n in range(1, 8)]

    # Each event carries the case after it as intake decided it: the lifecycle's fold of
    # the case's events up to it, stored and published alike (issue 14 item 2).
    envelopes = [
        json.loads(r["envelope"]) if isinstance(r["envelope"], str) else r["envelope"]
        for r in await platform.pool.fetch(
            "SELECT envelope FROM intake.events WHERE case_id = $1 ORDER BY position", uuid.UUID(case_id)
        )
    ]
    expected = []
    for n in range(1, len(envelopes) + 1):
        folded = fold((e["event_type"], e["local_authority"], e["data"]) for e in envelopes[:n])
        assert folded is not None
        expected.append({"state": folded.state.value, "sog_region": folded.sog_region, "responded": folded.responded,
                         "closed_reason": folded.closed_reason})
    assert [e["case_after"] for e in envelopes] == expected
    assert expected[-1] == {"state": "closed", "sog_region": None, "responded": True, "closed_reason": "concluded"}
    ids = {e["event_id"]: n for n, e in enumerate(envelopes)}
    published = await find_records(
        platform.settings.kafka_bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") in ids, count=len(ids)
    )
    assert sorted((ids[header(r, "ce_id")], json.loads(r.value)["case_after"]) for r in published) == list(
        enumerate(expected)
    )


async def test_a_new_case_starts_at_sequence_one(platform, tokens):
    for _ in range(2):
        case_id = (await _notify(platform, tokens["glasgow"])).json()["case_id"]
        await _post(platform, tokens["inspectorate"], case_id, "notification.criteria_assessed", {"meets_criteria": True})
        case = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["glasgow"]))
        assert [e["sequence"] for e in case.json()["events"]] == [1, 2]


@pytest.mark.parametrize("authorization", [None, "Bearer nonsense", "Bearer sir_000000000000_wrong"])
async def test_no_valid_token_is_401(platform, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = await platform.clients["intake"].post("/v1/notifications", json=notification(), headers=headers)
    assert answer.status_code == 401


async def test_a_revoked_token_is_401(platform):
    token = await issue_token(platform.pool, "council", local_authority="angus")
    assert (await _notify(platform, token)).status_code == 201
    await revoke_token(platform.pool, token.split("_")[1])
    assert (await _notify(platform, token)).status_code == 401


async def test_cross_authority_access_is_refused(platform, tokens):
    case_id = (await _notify(platform, tokens["glasgow"])).json()["case_id"]
    before = await _events_stored(platform)

    read = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["fife"]))
    assert read.status_code == 403
    write = await _post(platform, tokens["fife"], case_id, "review.submitted", review())
    assert write.status_code == 403 and "glasgow-city" in write.json()["detail"]
    assert await _events_stored(platform) == before


async def test_roles_post_only_their_events(platform, tokens):
    assert (await _notify(platform, tokens["inspectorate"])).status_code == 403
    case_id = (await _notify(platform, tokens["glasgow"])).json()["case_id"]
    answer = await _post(platform, tokens["glasgow"], case_id, "case.closed", {"reason": "withdrawn"})
    assert answer.status_code == 403 and "inspectorate" in answer.json()["detail"]


async def test_a_sog_reads_only_cases_routed_to_its_region(platform, tokens):
    case_id = (await _notify(platform, tokens["inverclyde"], mappa_notification())).json()["case_id"]
    mine = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["sog_north_strathclyde"]))
    assert mine.status_code == 200 and mine.json()["sog_region"] == "north-strathclyde"
    other = await platform.clients["intake"].get(f"/v1/cases/{case_id}", headers=bearer(tokens["sog_tayside"]))
    assert other.status_code == 403
    decision = await _post(platform, tokens["sog_north_strathclyde"], case_id, "sog.decision_recorded", {"scr_under_mappa": True})
    assert decision.status_code == 201 and decision.json()["state"] == "closed"


async def test_bad_input_names_the_field_and_changes_nothing(platform, tokens):
    before = await _events_stored(platform)
    answer = await _notify(platform, tokens["glasgow"], notification(incident_type="arson", extra="x"))
    assert answer.status_code == 422
    locations = {tuple(error["loc"]) for error in answer.json()["detail"]}
    assert ("body", "incident_type") in locations and ("body", "extra") in locations
    assert await _events_stored(platform) == before


async def test_events_that_do_not_fit_the_state_are_409(platform, tokens):
    case_id = (await _notify(platform, tokens["glasgow"])).json()["case_id"]
    early = await _post(platform, tokens["inspectorate"], case_id, "review.responded", {"outcome": "concluded"})
    assert early.status_code == 409 and "no review to respond to" in early.json()["detail"]
    await _post(platform, tokens["inspectorate"], case_id, "case.closed", {"reason": "withdrawn"})
    late = await _post(platform, tokens["glasgow"], case_id, "review.submitted", review())
    assert late.status_code == 409 and "closed" in late.json()["detail"]


async def test_an_unknown_case_is_404(platform, tokens):
    answer = await _post(platform, tokens["glasgow"], uuid.uuid4(), "review.submitted", review())
    assert answer.status_code == 404


async def test_an_idempotency_key_gives_the_first_answer_again(platform, tokens):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await _notify(platform, tokens["glasgow"], **key)
    before = await _events_stored(platform)
    again = await _notify(platform, tokens["glasgow"], **key)
    assert again.status_code == 201 and again.json() == first.json()
    assert await _events_stored(platform) == before

    other_body = await _notify(platform, tokens["glasgow"], notification(council_reference="OTHER"), **key)
    assert other_body.status_code == 409
    assert await _events_stored(platform) == before

    too_long = await _notify(platform, tokens["glasgow"], **{"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422
    assert [(e["loc"], e["type"]) for e in too_long.json()["detail"]] == [(["header", "Idempotency-Key"], "string_too_long")]
    assert await _events_stored(platform) == before


@pytest.mark.parametrize(("content_type", "encode"), [
    ("application/json", lambda text: text.encode()),
    ("application/json; charset=utf-8", lambda text: text.encode()),
    ("application/json", lambda text: text.encode("utf-8-sig")),  # a byte-order mark: json.loads reads it
    ("application/json", lambda text: text.encode("utf-16")),  # so does it UTF-16
    ("application/vnd.sir+json", lambda text: text.encode()),
])
async def test_a_notification_is_read_as_fastapi_reads_json(platform, tokens, content_type, encode):
    """POST /v1/notifications parses a usual body with pydantic's own parser, and hands
    every other body to FastAPI's handler (api.py _NotificationRoute): each body FastAPI
    took is taken still."""
    answer = await platform.clients["intake"].post(
        "/v1/notifications", content=encode(json.dumps(notification())),
        headers={**bearer(tokens["glasgow"]), "Content-Type": content_type},
    )
    assert answer.status_code == 201, answer.text
    case = await platform.clients["intake"].get(f"/v1/cases/{answer.json()['case_id']}", headers=bearer(tokens["glasgow"]))
    stored, sent = case.json()["events"][0]["data"], notification()
    assert {field: stored[field] for field in sent if field != "mappa"} == {f: v for f, v in sent.items() if f != "mappa"}


async def test_a_bad_notification_is_answered_in_fastapi_order(platform, tokens):
    """Bad JSON is a 422 before the token is looked at; a field refused is a 422 only for a
    valid token (401 before it); a body that is not JSON is refused as FastAPI refuses it."""
    intake, before = platform.clients["intake"], await _events_stored(platform)
    as_json = {"Content-Type": "application/json"}
    broken = await intake.post("/v1/notifications", content=b'{"council_reference": ', headers=as_json)
    assert broken.status_code == 422
    assert broken.json()["detail"] == [{"loc": ["body", 22], "msg": "JSON decode error", "type": "json_invalid"}]
    refused_field = notification(incident_type="arson")
    assert (await intake.post("/v1/notifications", json=refused_field)).status_code == 401
    answer = await _notify(platform, tokens["glasgow"], refused_field)
    assert answer.status_code == 422 and [e["loc"] for e in answer.json()["detail"]] == [["body", "incident_type"]]
    as_text = await intake.post(
        "/v1/notifications", content=json.dumps(notification()),
        headers={**bearer(tokens["glasgow"]), "Content-Type": "text/plain"},
    )
    assert as_text.status_code == 422 and as_text.json()["detail"][0]["loc"] == ["body"]
    empty = await intake.post("/v1/notifications", content=b"", headers={**bearer(tokens["glasgow"]), **as_json})
    assert empty.status_code == 422 and empty.json()["detail"][0]["type"] == "missing"
    assert await _events_stored(platform) == before


async def test_a_notification_is_checked_before_it_is_sent_and_nothing_is_stored(platform, tokens):
    """POST /v1/notifications/check: the warnings the 201 would carry, or the 422 it would
    give (dates judged against now), with nothing stored."""
    import datetime as dt

    stored = await platform.pool.fetchval("SELECT count(*) FROM intake.events")
    vague = notification(incident_type="other", incident_date=dt.date.today().isoformat())
    answer = await platform.clients["intake"].post("/v1/notifications/check", json=vague, headers=bearer(tokens["glasgow"]))
    assert answer.status_code == 200, answer.text
    assert [w["field"] for w in answer.json()["warnings"]] == ["incident_type_detail"]
    future = notification(incident_date=(dt.date.today() + dt.timedelta(days=30)).isoformat())
    refused = await platform.clients["intake"].post("/v1/notifications/check", json=future, headers=bearer(tokens["glasgow"]))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "incident_date"
    assert await platform.pool.fetchval("SELECT count(*) FROM intake.events") == stored


async def test_a_write_that_wakes_its_relay_in_process_sends_no_notify(platform):
    """Intake's HTTP writes wake their own process's relay (OutboxRelay.wake) and the
    outbox trigger sends no NOTIFY for them (a NOTIFY serialises every notifying commit
    of the cluster); every other write still notifies."""
    import asyncio
    import datetime as dt

    from services.intake import repository
    from services.intake.domain import new_event
    from services.intake.service import append_to_case
    from shared.events import IncidentNotifiedData
    from shared.principal import Principal

    council = Principal("tok_test", "council", "glasgow-city")

    async def write(conn, *, woken_in_process: bool) -> None:
        event = new_event(
            "incident.notified", case_id=uuid.uuid4(), local_authority="glasgow-city", principal=council,
            data=IncidentNotifiedData.model_validate(notification()), now=dt.datetime.now(dt.timezone.utc),
        )
        appended = append_to_case(None, 0, event, max_bytes=1_000_000)
        await repository.append(
            conn, [repository.NewCase(event.case_id, "glasgow-city", None)], [(appended.event, appended.text)],
            woken_in_process=woken_in_process,
        )

    heard: list[str] = []

    def hear(*args) -> None:
        heard.append(args[2])

    async def heard_after_commit() -> int:
        # A listening backend hands over the notifications committed before a query's end.
        await listener.execute("SELECT 1")
        for _ in range(10):
            await asyncio.sleep(0)
        return len(heard)

    async with platform.pool.acquire() as listener, platform.pool.acquire() as writer:
        await listener.add_listener("intake_outbox", hear)
        try:
            await write(writer, woken_in_process=True)
            assert await heard_after_commit() == 0
            await write(writer, woken_in_process=False)
            assert await eventually_heard(heard_after_commit) == 1
        finally:
            await listener.remove_listener("intake_outbox", hear)


async def eventually_heard(count, bound: int = 100) -> int:
    import asyncio

    for _ in range(bound):
        if heard := await count():
            return heard
        await asyncio.sleep(0.05)
    return 0
