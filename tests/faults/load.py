"""Load for the fault tests, and the checks that nothing was lost or done twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, ROUTING_EVENTS

NOTIFICATION = {
    "council_reference": "FAULT", "incident_date": "2026-11-02", "criterion": "charged_with_serious_offence",
    "incident_type": "serious_assault", "order_type": "community_payback_order", "subject_role": "perpetrator",
    "mappa": {"applies": False}, "domestic_abuse_aggravated": False, "historical": False,
    "signed_off_by": "service_manager",
}
# A client retries a notification (same Idempotency-Key) for this long while intake or
# its database is away; a notification never answered 201 is not accepted.
RETRY_SECONDS = 60.0


@dataclass
class Load:
    """Notifications posted by concurrent clients, each retried on a connection error or
    a 5xx with its Idempotency-Key until it gets its 201."""

    url: str
    token: str
    accepted: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # case_id -> event_id
    retries: int = 0
    given_up: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, count: int, concurrency: int = 4) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            await asyncio.gather(*(self._client(client, queue) for _ in range(concurrency)))

    async def _client(self, client: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        while not queue.empty():
            queue.get_nowait()
            await self._post(client, str(uuid.uuid4()))

    async def _post(self, client: httpx.AsyncClient, key: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RETRY_SECONDS
        while loop.time() < give_up:
            try:
                answer = await client.post("/v1/notifications", json=NOTIFICATION, headers=headers)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 201:
                body = answer.json()
                self.accepted[uuid.UUID(body["case_id"])] = uuid.UUID(body["event_id"])
                self.progress.set()
                return
            if answer is not None and answer.status_code < 500:
                raise AssertionError(f"notification refused: {answer.status_code} {answer.text}")
            self.retries += 1
            await asyncio.sleep(0.2)
        self.given_up += 1

    async def until_accepted(self, count: int) -> None:
        while len(self.accepted) < count:
            self.progress.clear()
            await self.progress.wait()


async def read_topic(bootstrap: str, topic: str, idle_polls: int = 4) -> list[dict]:
    """Every record of the topic from its start, as (event_id, event_type, case_id, data)
    dicts; the end is `idle_polls` empty fetches in a row (Tansu's end offsets are unreliable)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records, idle = [], 0
    try:
        while idle < idle_polls:
            batches = await consumer.getmany(timeout_ms=300)
            fetched = [r for batch in batches.values() for r in batch]
            idle = 0 if fetched else idle + 1
            for record in fetched:
                with_data = json.loads(record.value)
                records.append(with_data)
    finally:
        await consumer.stop()
    return records


async def wait_for_effects(database_url: str, cases: set[uuid.UUID], timeout: float = 120.0) -> None:
    """Until routing, deadlines and reporting all have every accepted case (bounded)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                missing = {}
                for what, sql in {
                    "routing deliveries": "SELECT count(DISTINCT case_id) FROM routing.deliveries"
                                          " WHERE case_id = ANY($1::uuid[]) AND status = 'delivered'",
                    "deadlines": "SELECT count(DISTINCT case_id) FROM deadlines.deadlines WHERE case_id = ANY($1::uuid[])",
                    "reporting": "SELECT count(*) FROM reporting.notifications WHERE case_id = ANY($1::uuid[])",
                }.items():
                    found = await conn.fetchval(sql, list(cases))
                    if found < len(cases):
                        missing[what] = len(cases) - found
                if not missing:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"after {timeout}s, cases still missing: {missing}") from None
    finally:
        await conn.close()


async def assert_nothing_lost_nothing_twice(database_url: str, bootstrap: str, load: Load) -> None:
    """Every accepted notification: in intake's store once, on the topic, forwarded once
    per recipient, its deadlines opened once, counted once in reporting."""
    assert load.given_up == 0, f"{load.given_up} notifications never got their 201"
    cases = set(load.accepted)
    await wait_for_effects(database_url, cases)
    conn = await asyncpg.connect(database_url)
    try:
        stored = Counter(await conn.fetchval(
            "SELECT array_agg(case_id) FROM intake.events WHERE event_type = 'incident.notified'"
            " AND case_id = ANY($1::uuid[])", list(cases)) or [])
        assert set(stored) == cases, f"{len(cases - set(stored))} accepted notifications not in intake's store"
        assert max(stored.values()) == 1, "a notification stored twice"
        # Reporting counts each notification once: its counter equals intake's store.
        counted = await conn.fetchval("SELECT coalesce(sum(notifications), 0) FROM reporting.notifications_by_authority")
        notified = await conn.fetchval("SELECT count(*) FROM intake.events WHERE event_type = 'incident.notified'")
        assert counted == notified, f"reporting counted {counted} notifications, intake stored {notified}"
    finally:
        await conn.close()

    on_topic = {uuid.UUID(r["event_id"]) for r in await read_topic(bootstrap, CASE_EVENTS)}
    lost = set(load.accepted.values()) - on_topic
    assert not lost, f"{len(lost)} accepted notifications never published"

    forwarded: dict[tuple, set] = {}
    for record in await read_topic(bootstrap, ROUTING_EVENTS):
        if record["event_type"] == "notification.forwarded" and uuid.UUID(record["case_id"]) in cases:
            forwarded.setdefault((record["case_id"], record["data"]["recipient"]), set()).add(record["event_id"])
    assert {uuid.UUID(c) for c, _ in forwarded} == cases, "a notification not forwarded"
    twice = {k: v for k, v in forwarded.items() if len(v) > 1}
    assert not twice, f"forwarded more than once: {len(twice)} (case, recipient)"

    opened: dict[tuple, set] = {}
    for record in await read_topic(bootstrap, DEADLINE_EVENTS):
        if record["event_type"] == "deadline.opened" and uuid.UUID(record["case_id"]) in cases:
            key = (record["case_id"], record["data"]["rule"], record["data"]["started_at"])
            opened.setdefault(key, set()).add(record["event_id"])
    assert {uuid.UUID(c) for c, *_ in opened} == cases, "a notification without its deadlines"
    twice = {k: v for k, v in opened.items() if len(v) > 1}
    assert not twice, f"deadlines opened more than once: {len(twice)}"
