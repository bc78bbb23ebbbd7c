"""The durable scheduler: warnings and breaches emitted exactly once.

Each round, in one transaction: claim the deadlines whose next fire time has come and
move them on (warned, or breached) in one statement (`UPDATE … FROM (SELECT … FOR
UPDATE SKIP LOCKED LIMIT n) RETURNING`), write their `deadline.warning` /
`deadline.breached` events to the record and the outbox in a second, commit. The events
exist if and only if the state change does, so:
- two schedulers at once never claim the same row (the second skips what the first holds);
- a scheduler killed mid-batch leaves nothing: its transaction rolls back and the rows
  are due again for the next round, anywhere;
- a restart finds fired rows with nothing left to fire (`next_fire_at` is NULL).

Time is the database's `now()`, read inside the claiming statement. A `now` port given
to the constructor (an async callable taking the connection) replaces it: tests pass
their own clocks (tests/clocks.py).

Speed (issue 15): a round is four round trips (begin, claim, enqueue, commit) whatever
its size; the events are serialised straight to their JSON (byte for byte what the
Envelope models give, which tests/unit/test_scheduler_events.py holds), not built as
models; between rounds the worker sleeps until the earliest next fire time (at least
`min_sleep_seconds`, so a stream of deadlines falling due goes in small batches; at most
`max_sleep_seconds`, so new deadlines are seen).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from services.deadlines import repository
from services.deadlines.domain import ACTOR, EVENT_ID_NAMESPACE, RULE_NAMES
from services.deadlines.repository import SCHEMA
from shared.events import SCHEMA_VERSION
from shared.messaging import IMPORTED_HEADER
from shared.metrics import DEADLINE_BREACHES, DEADLINE_WARNINGS, SCHEDULER_LAG
from shared.outbox import enqueue_serialised, wake_relays
from shared.reference import LOCAL_AUTHORITY_SLUGS
from shared.settings import Settings
from shared.topics import topic_of

log = logging.getLogger(__name__)

# The time the scheduler fires against: an async callable given the round's connection.
Now = Callable[[asyncpg.Connection], Awaitable[dt.datetime]]

_SOURCE = "deadlines"  # ce_source: /sir/deadlines


# --- the events, serialised directly ------------------------------------------------------


def _uuid5(name: str) -> str:
    """str(uuid.uuid5(EVENT_ID_NAMESPACE, name)) without building UUID objects."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE = EVENT_ID_NAMESPACE.bytes


def _json_time(moment: dt.datetime) -> str:
    """An aware datetime as pydantic writes it: ISO 8601, UTC as `Z`."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_ACTOR_JSON = json.dumps(ACTOR.model_dump(mode="json"), separators=(",", ":"))


def _fired(row: asyncpg.Record) -> str:
    return "breached" if row["status"] == "breached" else "warning"


def _fire_time(row) -> dt.datetime:
    return row["due_at"] if row["status"] == "breached" else row["warn_at"]


def serialise_fired(rows: Sequence, recorded_at: dt.datetime) -> tuple[list[str], list[str], list[bytes], list[bytes], list[str]]:
    """The `deadline.warning` / `deadline.breached` event of each fired row (status
    `breached`, or `open` = warned), as the Envelope models would serialise them
    (`services.deadlines.domain.deadline_event`): event ids, types, keys, JSON values
    and CloudEvents headers (JSON), in the rows' order."""
    recorded = _json_time(recorded_at)
    ids, types, keys, values, headers = [], [], [], [], []
    for row in rows:
        kind = _fired(row)
        case_id = str(row["case_id"])
        rule = row["rule"]
        stem = f"{case_id}/{rule}/{row['sequence']}/"
        event_id = _uuid5(stem + kind)
        due = _json_time(row["due_at"])
        breached = "breached" if kind == "breached" else None
        event_type = f"deadline.{kind}"
        ids.append(event_id)
        types.append(event_type)
        keys.append(case_id.encode())
        values.append((
            f'{{"event_id":"{event_id}","event_type":"{event_type}","schema_version":{SCHEMA_VERSION},'
            f'"case_id":"{case_id}","local_authority":"{row["local_authority"]}",'
            f'"received_at":"{due if breached else _json_time(row["warn_at"])}","recorded_at":"{recorded}",'
            f'"actor":{_ACTOR_JSON},"causation_id":"{_uuid5(stem + "opened")}",'
            f'"data":{{"rule":"{rule}","started_at":"{_json_time(row["started_at"])}","due_at":"{due}",'
            f'"met_at":null,"breached_at":{f"{chr(34)}{due}{chr(34)}" if breached else "null"},'
            f'"working_days_late":null}}}}'
        ).encode())
        headers.append(
            (f'{{"{IMPORTED_HEADER}":"true",' if row["imported"] else "{")
            + f'"ce_specversion":"1.0","ce_id":"{event_id}","ce_source":"/sir/{_SOURCE}","ce_type":"{event_type}",'
            f'"ce_time":"{recorded}","ce_subject":"{case_id}","content-type":"application/json"}}'
        )
    return ids, types, keys, values, headers


async def fire(conn: asyncpg.Connection, now: dt.datetime | None, limit: int) -> list[asyncpg.Record]:
    """Inside the caller's transaction: claim what is due at `now` (None: the database's
    now()), move it on and enqueue its events. Returns the rows fired (status
    `breached`, or `open` = warned), each with the round's `now` and `recorded_at`."""
    rows = await repository.fire_due(conn, now, limit)
    if rows:
        # The deadlines of imported history carry the imported mark, as their other events do.
        ids, types, keys, values, headers = serialise_fired(rows, rows[0]["recorded_at"])
        topic = topic_of(types[0])
        await enqueue_serialised(conn, SCHEMA, ids, types, [topic] * len(rows), keys, values, headers)
    return rows


def _observe(rows: Sequence[asyncpg.Record]) -> None:
    fired = Counter((row["status"] == "breached", row["rule"], row["local_authority"]) for row in rows)
    for (breached, rule, local_authority), count in fired.items():
        (DEADLINE_BREACHES if breached else DEADLINE_WARNINGS).labels(rule, local_authority).inc(count)
    lag = {True: SCHEDULER_LAG.labels("breach"), False: SCHEDULER_LAG.labels("warning")}
    for row in rows:
        lag[row["status"] == "breached"].observe(max(0.0, (row["now"] - _fire_time(row)).total_seconds()))


class Scheduler:
    """`concurrency` rounds may be in flight while a backlog lasts (a burst after an
    outage): one round's statements run in the database while the next one's events are
    serialised. SKIP LOCKED keeps them apart, as it keeps schedulers of two processes."""

    def __init__(
        self,
        now: Now | None = None,
        batch_size: int = 1000,
        max_sleep_seconds: float = 1.0,
        min_sleep_seconds: float = 0.02,
        concurrency: int = 2,
    ):
        self.now = now
        self.batch_size = batch_size
        self.max_sleep_seconds = max_sleep_seconds
        self.min_sleep_seconds = min_sleep_seconds
        self.concurrency = concurrency

    async def _round(self, conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            now = None if self.now is None else await self.now(conn)
            rows = await fire(conn, now, self.batch_size)
        if rows:
            # Committed: this process's relay publishes them now, not at the NOTIFY's return.
            wake_relays(SCHEMA)
            _observe(rows)
        return len(rows)

    async def run_once(self, pool: asyncpg.Pool) -> int:
        """One round: one batch in one transaction. Returns how many fired."""
        async with pool.acquire() as conn:
            return await self._round(conn)

    async def run_until_idle(self, pool: asyncpg.Pool) -> int:
        """Rounds until nothing is due (for commands and tests); returns how many fired."""
        total = 0
        while fired := await self.run_once(pool):
            total += fired
        return total

    async def run(self, pool: asyncpg.Pool, settings: Settings | None = None) -> None:
        """The service's worker: fire what is due, then sleep until the next fire time;
        while rounds come back full, helpers fire alongside."""
        # Every series at 0 from the start: a counter first seen at its first breach
        # would read as no increase in a dashboard's range.
        for rule in RULE_NAMES:
            for local_authority in LOCAL_AUTHORITY_SLUGS:
                DEADLINE_BREACHES.labels(rule, local_authority)
                DEADLINE_WARNINGS.labels(rule, local_authority)
        backlog = asyncio.Event()
        helpers = [asyncio.create_task(self._help(pool, backlog)) for _ in range(self.concurrency - 1)]
        try:
            await self._lead(pool, backlog)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _lead(self, pool: asyncpg.Pool, backlog: asyncio.Event) -> None:
        backoff = 0.1
        while True:
            try:
                async with pool.acquire() as conn:
                    fired = await self._round(conn)
                    wait = 0.0 if fired >= self.batch_size else await self._seconds_to_next(conn)
                backoff = 0.1
                if wait:
                    backlog.clear()
                    await asyncio.sleep(wait)
                else:
                    backlog.set()
                    await asyncio.sleep(0)  # a full batch: go again, letting the relay and HTTP in
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as error:  # database away: wait, try again
                backlog.clear()
                log.warning("deadline scheduler: %r; retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _help(self, pool: asyncpg.Pool, backlog: asyncio.Event) -> None:
        while True:
            await backlog.wait()
            try:
                if await self.run_once(pool) < self.batch_size:
                    backlog.clear()  # the lead finds the rest, and sleeps until the next
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as error:  # the lead says so, and waits
                log.debug("deadline scheduler helper: %r", error)
                backlog.clear()

    async def _seconds_to_next(self, conn: asyncpg.Connection) -> float:
        earliest, now = await repository.earliest_fire(conn)
        if earliest is None:
            return self.max_sleep_seconds
        if self.now is not None:
            now = await self.now(conn)
        wait = (earliest - now).total_seconds()
        return min(self.max_sleep_seconds, max(self.min_sleep_seconds, wait))
