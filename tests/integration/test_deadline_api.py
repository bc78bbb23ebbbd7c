"""End to end: a notification posted through intake gets its deadlines; the API answers
each role as SPEC §1 says; moving the injected clock past a due time puts one
`deadline.breached` on sir.deadlines.v1, and a restart never a second."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from dataclasses import replace

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.deadlines.app import SERVICE
from services.deadlines.scheduler import Scheduler
from shared import devstack
from shared.auth import issue_token
from shared.messaging import DEADLINE_EVENTS
from shared.service import create_app
from tests.clocks import ShiftedClock
from tests.factories import mappa_notification, review
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually, header, metric_value


@contextlib.asynccontextmanager
async def _deadlines_app(settings, clock):
    # The service with its scheduler on the test's clock, looking again often.
    app = create_app(replace(SERVICE, workers=[Scheduler(clock, max_sleep_seconds=0.1).run]), settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://deadlines"
    ) as client:
        yield client


async def _deadline_events_until(bootstrap: str, case_id: str, last, timeout: float = 30.0) -> list[dict]:
    """The case's deadline events on the topic, from its start up to the first that `last` matches.
    One case's events share a partition, in order: nothing emitted before `last` is missed."""
    consumer = AIOKafkaConsumer(
        DEADLINE_EVENTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if header(record, "ce_subject") != case_id:
                            continue
                        found.append(json.loads(record.value))
                        if last(found[-1]):
                            return found
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def stack(infra):
    # A broker of its own: the session's broker may carry another deadlines service
    # (the `platform` fixture's) in the same consumer group, which would take half the
    # partitions and apply their events to its own database.
    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ("intake",)) as platform:
            pool = platform.pool
            tokens = {
                "glasgow": await issue_token(pool, "council", local_authority="glasgow-city"),
                "fife": await issue_token(pool, "council", local_authority="fife"),
                "inspectorate": await issue_token(pool, "inspectorate"),
                "admin": await issue_token(pool, "admin"),
                "sog_glasgow": await issue_token(pool, "sog", region="glasgow"),
                "sog_tayside": await issue_token(pool, "sog", region="tayside"),
            }
            yield platform, tokens


async def _notify(platform, token) -> str:
    answer = await platform.clients["intake"].post(
        "/v1/notifications", json=mappa_notification(), headers=bearer(token)
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["case_id"]


async def _case_deadlines(client, case_id, token, expected_count=None):
    async def answered():
        answer = await client.get(f"/v1/cases/{case_id}/deadlines", headers=bearer(token))
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return body if expected_count is None or len(body["deadlines"]) == expected_count else None

    return await eventually(answered, what=f"deadlines of case {case_id}")


async def test_a_notification_gets_its_deadlines_and_one_breach_survives_restarts(stack):
    platform, tokens = stack
    settings, pool = platform.settings, platform.pool
    clock = ShiftedClock()
    async with _deadlines_app(settings, clock) as client:
        case_id = await _notify(platform, tokens["glasgow"])
        body = await _case_deadlines(client, case_id, tokens["glasgow"], expected_count=4)
        by_rule = {d["rule"]: d for d in body["deadlines"]}
        assert set(by_rule) == {"notification", "sg_forward", "sog_forward", "review_submission"}
        assert by_rule["notification"]["status"] == "met"
        review_due = dt.datetime.fromisoformat(by_rule["review_submission"]["due_at"])
        assert by_rule["review_submission"] | {"due_at": None} == by_rule["review_submission"] | {
            "status": "open", "owner": "council", "limit": "3 calendar months", "watched": True, "due_at": None,
        }

        # Past the due time: the running scheduler breaches it.
        now = await pool.fetchval("SELECT now()")
        clock.advance(review_due - now + dt.timedelta(hours=1))
        events = await _deadline_events_until(
            settings.kafka_bootstrap, case_id,
            lambda e: e["event_type"] == "deadline.breached" and e["data"]["rule"] == "review_submission",
        )
        breach = events[-1]
        assert breach["data"]["breached_at"] == breach["data"]["due_at"]
        assert breach["local_authority"] == "glasgow-city"
        assert breach["actor"] == {"role": "service", "id": "deadlines"}
        assert metric_value("sir_deadline_breaches_total", rule="review_submission", local_authority="glasgow-city") >= 1
        body = await _case_deadlines(client, case_id, tokens["inspectorate"])
        assert {d["rule"]: d["status"] for d in body["deadlines"]}["review_submission"] == "breached"

    # A restart, later still: nothing is due again.
    clock.advance(dt.timedelta(days=30))
    async with _deadlines_app(settings, clock):
        assert await Scheduler(clock).run_until_idle(pool) == 0
        # A review, at last: met late, and an inspectorate response owed — the marker after
        # which a second breach would have been seen.
        answer = await platform.clients["intake"].post(
            f"/v1/cases/{case_id}/events", json={"event_type": "review.submitted", "data": review()},
            headers=bearer(tokens["glasgow"]),
        )
        assert answer.status_code in (200, 201), answer.text
        events = await _deadline_events_until(
            settings.kafka_bootstrap, case_id,
            lambda e: e["event_type"] == "deadline.opened" and e["data"]["rule"] == "inspectorate_response",
        )
    kinds = [(e["event_type"], e["data"]["rule"]) for e in events]
    assert kinds.count(("deadline.breached", "review_submission")) == 1
    assert kinds.count(("deadline.breached", "sg_forward")) == 1
    met = next(e for e in events if e["event_type"] == "deadline.met" and e["data"]["rule"] == "review_submission")
    assert met["data"]["working_days_late"] == 0  # received now: before the due time, though after the breach


async def test_who_may_read_which_deadlines(stack):
    platform, tokens = stack
    async with _deadlines_app(platform.settings, ShiftedClock()) as client:
        case_id = await _notify(platform, tokens["glasgow"])
        await _case_deadlines(client, case_id, tokens["inspectorate"], expected_count=4)
        path = f"/v1/cases/{case_id}/deadlines"
        for token, status in [("glasgow", 200), ("inspectorate", 200), ("admin", 200), ("sog_glasgow", 200),
                              ("fife", 403), ("sog_tayside", 403)]:
            answer = await client.get(path, headers=bearer(tokens[token]))
            assert answer.status_code == status, (token, answer.text)
        assert "another local authority" in (await client.get(path, headers=bearer(tokens["fife"]))).json()["detail"]
        assert (await client.get(path)).status_code == 401
        assert (await client.get("/v1/cases/00000000-0000-0000-0000-000000000000/deadlines",
                                 headers=bearer(tokens["inspectorate"]))).status_code == 404

        async def listed(token, **params):
            answer = await client.get("/v1/deadlines", params=params, headers=bearer(tokens[token]))
            assert answer.status_code == 200, answer.text
            return answer.json()["deadlines"]

        mine = await listed("glasgow", status="open", rule="sg_forward")
        assert mine and {d["local_authority"] for d in mine} == {"glasgow-city"}
        assert {d["rule"] for d in mine} == {"sg_forward"} and {d["status"] for d in mine} == {"open"}
        assert case_id in {d["case_id"] for d in await listed("sog_glasgow", rule="sog_forward")}
        assert await listed("sog_tayside") == []  # no case here is routed to Tayside
        assert await listed("fife") == []
        assert case_id in {d["case_id"] for d in await listed("inspectorate", local_authority="glasgow-city", status="open")}
        page = (await client.get("/v1/deadlines", params={"limit": 1}, headers=bearer(tokens["admin"]))).json()
        assert len(page["deadlines"]) == 1 and page["next_offset"] == 1

        refused = await client.get("/v1/deadlines", params={"local_authority": "fife"}, headers=bearer(tokens["glasgow"]))
        assert refused.status_code == 403 and "fife" in refused.json()["detail"]
        for bad in ({"status": "late"}, {"rule": "nope"}, {"local_authority": "atlantis"}, {"limit": 0}):
            answer = await client.get("/v1/deadlines", params=bad, headers=bearer(tokens["inspectorate"]))
            assert answer.status_code == 422, bad
            assert next(iter(bad)) in json.dumps(answer.json()["detail"])

        metrics = (await client.get("/metrics")).text
        assert 'sir_deadlines_open{rule="sg_forward"}' in metrics
        assert metric_value("sir_deadlines_open", rule="review_submission") >= 1
