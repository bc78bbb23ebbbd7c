"""Routing against real parts: PostgreSQL, the broker, and real HTTP receivers started
here that check each request's signature.

The first tests drive routing's handler and delivery loop on a database of their own
(no consumer group: the session's routing service keeps the broker's); the last ones go
through the whole platform, from intake's POST to the outbound topics and the records."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.routing import domain, repository
from services.routing.delivery import delivery_loop
from services.routing.domain import RecipientConfig
from services.routing.handlers import on_case_event
from shared.consumer import Delivery
from shared.db import COMMON, create_pool, migrate
from shared.devstack import free_port
from shared.events import ANY_EVENT, CASE_EVENT
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS, outbound_topic
from tests.factories import envelope, mappa_notification, notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually, find_records, header, metric_value

MIGRATIONS = Path(__file__).parents[2] / "services" / "routing" / "migrations"
SECRET_ENV = "SIR_TEST_WEBHOOK_SECRET"
SECRET = "whsec_" + base64.b64encode(b"test-secret-of-the-receiver!!").decode()


@dataclass
class Received:
    delivery: str
    case_id: str
    status: int
    signed: bool
    headers: dict


class Receiver:
    """A webhook receiver on 127.0.0.1: checks the signature (401 if it is wrong), then
    answers the next of `answers` (200 once they run out). Can be down, and come back
    on the same port."""

    def __init__(self, answers=(), secret: str = SECRET):
        self.port = free_port()
        self.answers = list(answers)
        self.secret = secret
        self.received: list[Received] = []
        # Cleared: the receiver holds every request until it is set (a slow receiver).
        self.answering = threading.Event()
        self.answering.set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sir/notifications"

    def accepted(self, case_id: str) -> list[Received]:
        return [r for r in self.received if r.case_id == case_id and r.status < 300]

    def of_case(self, case_id: str) -> list[Received]:
        return [r for r in self.received if r.case_id == case_id]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.answering.wait(timeout=30)
                try:  # as any receiver does it: the Standard Webhooks library
                    Webhook(receiver.secret).verify(body, dict(self.headers))
                    signed = True
                except WebhookVerificationError:
                    signed = False
                status = (receiver.answers.pop(0) if receiver.answers else 200) if signed else 401
                receiver.received.append(Received(
                    self.headers.get("webhook-id", ""), json.loads(body)["case_id"], status, signed,
                    dict(self.headers),
                ))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.answering.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(answers=(), start=True) -> Receiver:
        receiver = Receiver(answers)
        started.append(receiver)
        return receiver.start() if start else receiver

    yield make
    for receiver in started:
        receiver.stop()


# --- routing's handler and delivery loop on a database of their own ---------------------


@pytest.fixture
async def routing(infra, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = infra.settings(infra.new_database(), SIR_ROUTING_POLL_SECONDS=0.2)
    pool = await create_pool(settings.database_url, max_size=6)
    await migrate(pool, "routing", COMMON, MIGRATIONS)
    loop = Loop(pool, settings)
    yield loop
    await loop.stop()
    await pool.close()


class Loop:
    """The delivery loop as the service runs it, which a test can stop and start again."""

    def __init__(self, pool, settings):
        self.pool, self.settings = pool, settings
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(delivery_loop(self.pool, self.settings))
        await eventually(lambda: self.pool.fetchval("SELECT count(*) FROM routing.recipients"), what="seeding")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def webhook(self, recipient: str, receiver: Receiver, **settings) -> None:
        config = RecipientConfig(**{
            "channel": "webhook", "url": receiver.url, "secret_env": SECRET_ENV,
            "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, "timeout_seconds": 5, **settings,
        })
        await repository.set_recipient(self.pool, recipient, config, by="test")

    async def notify(self, body: dict, local_authority="glasgow-city", imported=False, event=None):
        """What the consumer does with a notification: the handler, in one transaction."""
        event = event or CASE_EVENT.validate_python(envelope("incident.notified", body, local_authority=local_authority))
        async with self.pool.acquire() as conn, conn.transaction():
            await on_case_event(conn, event, Delivery(CASE_EVENTS, 0, 0, imported))
        return event

    async def delivery(self, case_id, recipient="scottish-government"):
        return await self.pool.fetchrow(
            "SELECT * FROM routing.deliveries WHERE case_id = $1 AND recipient = $2", case_id, recipient
        )

    async def status_is(self, case_id, status, recipient="scottish-government"):
        row = await self.delivery(case_id, recipient)
        return row if row is not None and row["status"] == status else None

    async def records(self, case_id, topic=ROUTING_EVENTS) -> list:
        """What routing has recorded for the topic (no relay runs here)."""
        rows = await self.pool.fetch("SELECT value FROM routing.emitted_events WHERE topic = $1 ORDER BY position", topic)
        values = [json.loads(r["value"]) for r in rows]
        return [v for v in values if v["case_id"] == str(case_id)]


async def test_a_flaky_webhook_gets_the_notification_once_signed(routing, receivers):
    receiver = receivers(answers=[500, 503])
    await routing.webhook("scottish-government", receiver)
    await routing.start()
    event = await routing.notify(notification())

    row = await eventually(lambda: routing.status_is(event.case_id, "delivered"), what="the delivery")
    assert row["attempts"] == 3 and row["channel"] == "webhook"
    calls = receiver.of_case(str(event.case_id))
    assert [c.status for c in calls] == [500, 503, 200]
    assert all(c.signed for c in calls) and {c.delivery for c in calls} == {str(row["id"])}
    assert calls[0].headers["ce-id"] == str(event.event_id) and calls[0].headers["ce-type"] == "incident.notified"
    [record] = await routing.records(event.case_id)
    assert record["event_type"] == "notification.forwarded"
    assert record["causation_id"] == str(event.event_id)  # caused by the notification
    assert record["data"] | {"delivered_at": None} == {
        "recipient": "scottish-government", "channel": "webhook", "attempts": 3, "delivered_at": None,
    }
    ANY_EVENT.validate_python(record)


async def test_a_receiver_down_for_a_while_gets_it_once_it_is_back_across_a_restart(routing, receivers):
    receiver = receivers(start=False)
    await routing.webhook("scottish-government", receiver)
    await routing.start()
    event = await routing.notify(notification())

    async def failed_twice():
        row = await routing.delivery(event.case_id)
        return row["attempts"] >= 2 and row

    row = await eventually(failed_twice, what="two failed attempts")
    assert row["status"] == "pending" and "ConnectError" in row["last_error"]

    await routing.stop()  # the service goes away; its retry schedule stays in PostgreSQL
    kept = await routing.delivery(event.case_id)
    assert kept["status"] == "pending" and kept["next_attempt_at"] is not None
    assert kept["lease"] is None  # a stopping loop gives its claims back
    receiver.start()
    await routing.start()

    row = await eventually(lambda: routing.status_is(event.case_id, "delivered"), what="delivery after the restart")
    assert len(receiver.accepted(str(event.case_id))) == 1
    assert row["attempts"] > kept["attempts"]
    [record] = await routing.records(event.case_id)
    assert record["data"]["attempts"] == row["attempts"]


async def test_a_refusal_ends_as_forward_failed_and_an_operator_retry_delivers(routing, receivers):
    receiver = receivers(answers=[400, 400])
    await routing.webhook("scottish-government", receiver, max_attempts=2)
    await routing.start()
    event = await routing.notify(notification())

    row = await eventually(lambda: routing.status_is(event.case_id, "failed"), what="the refusal")
    assert row["attempts"] == 2 and row["last_error"] == "HTTP 400"
    [failed] = await routing.records(event.case_id)
    assert failed["event_type"] == "notification.forward_failed"
    assert failed["data"] == {"recipient": "scottish-government", "attempts": 2, "error": "HTTP 400"}

    async with routing.pool.acquire() as conn:  # what POST /v1/deliveries/{id}/retry does
        await repository.retry(conn, row["id"])
        await repository.wake_delivery_loop(conn)
    row = await eventually(lambda: routing.status_is(event.case_id, "delivered"), what="the retried delivery")
    assert row["attempts"] == 3
    assert [r["event_type"] for r in await routing.records(event.case_id)] == [
        "notification.forward_failed", "notification.forwarded",
    ]
    assert len(receiver.accepted(str(event.case_id))) == 1


async def test_a_slow_receiver_holds_up_only_its_own_deliveries(routing, receivers):
    slow, quick = receivers(), receivers()
    slow.answering.clear()
    await routing.webhook("sog:tayside", slow, timeout_seconds=60)
    await routing.webhook("scottish-government", quick)
    await routing.start()
    event = await routing.notify(mappa_notification(supervising_local_authority="dundee-city"))

    await eventually(lambda: routing.status_is(event.case_id, "delivered"), what="the quick receiver's delivery")
    waiting = await routing.delivery(event.case_id, "sog:tayside")
    assert waiting["status"] == "pending" and waiting["attempts"] == 0 and waiting["lease"] is not None
    slow.answering.set()
    await eventually(lambda: routing.status_is(event.case_id, "delivered", "sog:tayside"), what="the slow one's")
    assert len(slow.accepted(str(event.case_id))) == 1


async def test_retryable_failures_end_at_the_horizon(routing, receivers):
    receiver = receivers(answers=[503] * 1000)
    await routing.webhook("scottish-government", receiver, horizon_seconds=0.3)
    await routing.start()
    event = await routing.notify(notification())

    row = await eventually(lambda: routing.status_is(event.case_id, "failed"), what="the horizon")
    assert row["last_error"] == "HTTP 503" and row["attempts"] >= 1
    [failed] = await routing.records(event.case_id)
    assert failed["event_type"] == "notification.forward_failed" and failed["data"]["attempts"] == row["attempts"]


async def test_a_pending_delivery_takes_the_channel_an_operator_switches_to(routing, receivers):
    receiver = receivers(start=False)
    await routing.webhook("scottish-government", receiver)
    await routing.start()
    event = await routing.notify(notification())
    await eventually(lambda: _attempted(routing, event.case_id), what="a failed webhook attempt")

    await repository.set_recipient(routing.pool, "scottish-government", RecipientConfig(channel="topic"), by="test")
    row = await eventually(lambda: routing.status_is(event.case_id, "delivered"), what="delivery by topic")
    assert row["channel"] == "topic"
    [outbound] = await routing.records(event.case_id, topic=outbound_topic("scottish-government"))
    assert outbound == json.loads(event.model_dump_json())


async def _attempted(routing, case_id):
    row = await routing.delivery(case_id)
    return row["attempts"] >= 1


async def test_the_topic_channel_forwards_at_once_and_a_redelivered_notification_changes_nothing(routing):
    await routing.start()
    body = mappa_notification(supervising_local_authority="dundee-city")
    event = await routing.notify(body)
    await routing.notify(body, event=event)  # the same event again, past the consumer's dedupe

    rows = await routing.pool.fetch("SELECT * FROM routing.deliveries WHERE case_id = $1 ORDER BY recipient", event.case_id)
    assert [(r["recipient"], r["status"], r["attempts"], r["channel"]) for r in rows] == [
        ("scottish-government", "delivered", 1, "topic"), ("sog:tayside", "delivered", 1, "topic"),
    ]
    records = await routing.records(event.case_id)
    assert sorted((r["event_type"], r["data"]["recipient"]) for r in records) == [
        ("notification.forwarded", "scottish-government"), ("notification.forwarded", "sog:tayside"),
    ]
    for recipient in ("scottish-government", "sog:tayside"):
        [outbound] = await routing.records(event.case_id, topic=outbound_topic(recipient))
        assert outbound["event_id"] == str(event.event_id)


async def test_imported_history_is_not_delivered(routing):
    await routing.start()
    event = await routing.notify(mappa_notification(), imported=True)
    assert await routing.delivery(event.case_id) is None
    assert await routing.records(event.case_id) == []


# --- through the platform: intake → routing → outbound topics and records -----------------


async def _notify(platform, token, body) -> dict:
    answer = await platform.clients["intake"].post("/v1/notifications", json=body, headers=bearer(token))
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _deliveries(platform, tokens, **params) -> list[dict]:
    answer = await platform.clients["routing"].get("/v1/deliveries", params=params, headers=bearer(tokens["admin"]))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _records_of(case_id: str, event_type: str = "notification.forwarded"):
    return lambda r: header(r, "ce_subject") == case_id and header(r, "ce_type") == event_type


async def test_a_mappa_notification_reaches_the_scottish_government_and_the_right_sog(platform, tokens):
    # Glasgow notifies; Dundee supervises: the SOG of Tayside, not Glasgow's.
    accepted = await _notify(platform, tokens["glasgow"], mappa_notification(supervising_local_authority="dundee-city"))
    case_id = accepted["case_id"]
    bootstrap = platform.settings.kafka_bootstrap

    for recipient in ("scottish-government", "sog:tayside"):
        [record] = await find_records(bootstrap, outbound_topic(recipient), lambda r: header(r, "ce_subject") == case_id)
        assert json.loads(record.value)["event_id"] == accepted["event_id"]
        assert record.key == case_id.encode() and header(record, "ce_type") == "incident.notified"
        assert header(record, "ce_id") == accepted["event_id"] and header(record, "ce_source") == "/sir/routing"
    records = await find_records(bootstrap, ROUTING_EVENTS, _records_of(case_id), count=2)
    assert sorted(json.loads(r.value)["data"]["recipient"] for r in records) == ["scottish-government", "sog:tayside"]
    assert {json.loads(r.value)["data"]["channel"] for r in records} == {"topic"}

    deliveries = await _deliveries(platform, tokens, case_id=case_id, status="delivered")
    assert sorted(d["recipient"] for d in deliveries) == ["scottish-government", "sog:tayside"]
    assert "notification" not in deliveries[0]


async def test_the_same_notification_delivered_again_is_forwarded_once(platform, tokens):
    accepted = await _notify(platform, tokens["glasgow"], notification())
    case_id = accepted["case_id"]
    bootstrap = platform.settings.kafka_bootstrap
    await find_records(bootstrap, ROUTING_EVENTS, _records_of(case_id))
    before = await _deliveries(platform, tokens, case_id=case_id)
    forwarded = metric_value("sir_deliveries_total", recipient="scottish-government", channel="topic", outcome="delivered")

    [record] = await find_records(bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == accepted["event_id"])
    marker = envelope("incident.notified", notification(), local_authority="angus")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        # The same bytes again, then a marker on the same partition: once the marker is
        # forwarded, the copy has been seen.
        await producer.send_and_wait(CASE_EVENTS, record.value, key=record.key, headers=list(record.headers))
        await producer.send_and_wait(CASE_EVENTS, json.dumps(marker).encode(), key=record.key)
    finally:
        await producer.stop()
    await find_records(bootstrap, ROUTING_EVENTS, _records_of(marker["case_id"]))

    assert await _deliveries(platform, tokens, case_id=case_id) == before
    assert len(before) == 1 and before[0]["attempts"] == 1
    # The marker was forwarded; the copy was not.
    assert metric_value(
        "sir_deliveries_total", recipient="scottish-government", channel="topic", outcome="delivered"
    ) == forwarded + 1


@contextlib.asynccontextmanager
async def _as_webhook(platform, tokens, recipient, receiver, **settings):
    """Switch `recipient` to the receiver through the API, and back to `topic` after."""
    client = platform.clients["routing"]
    config = {"channel": "webhook", "url": receiver.url, "secret_env": SECRET_ENV,
              "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, **settings}
    answer = await client.put(f"/v1/recipients/{recipient}", json=config, headers=bearer(tokens["admin"]))
    assert answer.status_code == 200, answer.text
    try:
        yield answer.json()
    finally:
        answer = await client.put(f"/v1/recipients/{recipient}", json={"channel": "topic"}, headers=bearer(tokens["admin"]))
        assert answer.status_code == 200, answer.text


async def test_a_flaky_webhook_through_the_platform_gets_it_exactly_once(platform, tokens, receivers, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = receivers(answers=[502, 500])
    # Forth Valley's SOG, which no other test routes to.
    async with _as_webhook(platform, tokens, "sog:forth-valley", receiver) as shown:
        assert shown["secret_set"] is True and SECRET not in json.dumps(shown)
        accepted = await _notify(platform, tokens["glasgow"], mappa_notification(supervising_local_authority="stirling"))
        case_id = accepted["case_id"]
        [record] = await find_records(
            platform.settings.kafka_bootstrap, ROUTING_EVENTS,
            lambda r: _records_of(case_id)(r) and json.loads(r.value)["data"]["recipient"] == "sog:forth-valley",
        )
    assert json.loads(record.value)["data"]["channel"] == "webhook" and json.loads(record.value)["data"]["attempts"] == 3
    assert [r.status for r in receiver.of_case(case_id)] == [502, 500, 200]
    assert all(r.signed for r in receiver.of_case(case_id))
    deliveries = {d["recipient"]: d for d in await _deliveries(platform, tokens, case_id=case_id)}
    assert deliveries["sog:forth-valley"]["status"] == "delivered" and deliveries["sog:forth-valley"]["attempts"] == 3
    assert deliveries["scottish-government"]["channel"] == "topic"


async def test_a_refused_webhook_ends_as_forward_failed_and_the_operator_retries(platform, tokens, receivers, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = receivers(answers=[400])
    client = platform.clients["routing"]
    # South West Scotland's SOG, which no other test routes to.
    async with _as_webhook(platform, tokens, "sog:south-west-scotland", receiver, max_attempts=1):
        accepted = await _notify(platform, tokens["glasgow"], mappa_notification(supervising_local_authority="east-ayrshire"))
        case_id = accepted["case_id"]
        [failed] = await find_records(platform.settings.kafka_bootstrap, ROUTING_EVENTS,
                                      _records_of(case_id, "notification.forward_failed"))
        assert json.loads(failed.value)["data"] == {"recipient": "sog:south-west-scotland", "attempts": 1, "error": "HTTP 400"}
        [delivery] = await _deliveries(platform, tokens, case_id=case_id, status="failed")

        refused = await client.post(f"/v1/deliveries/{delivery['id']}/retry", headers=bearer(tokens["inspectorate"]))
        assert refused.status_code == 403
        retried = await client.post(f"/v1/deliveries/{delivery['id']}/retry", headers=bearer(tokens["admin"]))
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
        await find_records(
            platform.settings.kafka_bootstrap, ROUTING_EVENTS,
            lambda r: _records_of(case_id)(r) and json.loads(r.value)["data"]["recipient"] == "sog:south-west-scotland",
        )
    again = await client.post(f"/v1/deliveries/{delivery['id']}/retry", headers=bearer(tokens["admin"]))
    assert again.status_code == 409 and "delivered" in again.json()["detail"]
    assert len(receiver.accepted(case_id)) == 1


async def test_the_operator_api_checks_who_asks_and_what(platform, tokens):
    client = platform.clients["routing"]
    admin = bearer(tokens["admin"])
    assert (await client.get("/v1/deliveries", headers=bearer(tokens["glasgow"]))).status_code == 403
    assert (await client.get("/v1/deliveries")).status_code == 401
    assert (await client.get("/v1/deliveries", params={"status": "owed"}, headers=admin)).status_code == 422
    assert (await client.post(f"/v1/deliveries/{uuid.uuid4()}/retry", headers=admin)).status_code == 404

    listed = await client.get("/v1/recipients", headers=bearer(tokens["inspectorate"]))
    assert listed.status_code == 200
    assert {r["recipient"] for r in listed.json()} == set(domain.ALL_RECIPIENTS)
    put = client.put
    inspectorate = bearer(tokens["inspectorate"])
    assert (await put("/v1/recipients/sog:fife", json={"channel": "topic"}, headers=inspectorate)).status_code == 403
    assert (await put("/v1/recipients/sog:atlantis", json={"channel": "topic"}, headers=admin)).status_code == 404
    no_url = await put("/v1/recipients/sog:fife", json={"channel": "webhook", "secret_env": "X"}, headers=admin)
    assert no_url.status_code == 422 and "url" in no_url.text
    plain = await put("/v1/recipients/sog:fife", headers=admin,
                      json={"channel": "webhook", "url": "http://sog.example/x", "secret_env": "X"})
    assert plain.status_code == 422 and "https" in plain.text
    unknown = await put("/v1/recipients/sog:fife", json={"channel": "pigeon"}, headers=admin)
    assert unknown.status_code == 422
    fife = next(r for r in (await client.get("/v1/recipients", headers=admin)).json() if r["recipient"] == "sog:fife")
    assert fife["channel"] == "topic"


async def test_routing_metrics_show_deliveries_and_what_is_pending(platform, tokens):
    accepted = await _notify(platform, tokens["glasgow"], notification())
    await find_records(platform.settings.kafka_bootstrap, ROUTING_EVENTS, _records_of(accepted["case_id"]))
    text = (await platform.clients["routing"].get("/metrics")).text
    assert 'sir_deliveries_total{channel="topic",outcome="delivered",recipient="scottish-government"}' in text
    assert 'sir_delivery_latency_seconds_count{channel="topic",recipient="scottish-government"}' in text
    assert 'sir_deliveries_pending{recipient="sog:tayside"}' in text
