"""The durable scheduler: warnings and breaches emitted exactly once.

Each round, in one transaction: claim the deadlines whose next fire time has come
(`FOR UPDATE SKIP LOCKED`, against the clock's now), move them on (warned, or
breached), write their `deadline.warning` / `deadline.breached` events to the outbox,
commit. The events exist if and only if the state change does, so:
- two schedulers at once never claim the same row (the second skips what the first holds);
- a scheduler killed mid-batch leaves nothing: its transaction rolls back and the rows
  are due again for the next round, anywhere;
- a restart finds fired rows with nothing left to fire (`next_fire_at` is NULL).
The clock is injected: the database's `now()` in service, a shifted or fixed one in tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from typing import Protocol

import asyncpg

from services.deadlines import repository
from services.deadlines.domain import RULE_NAMES, deadline_event, event_id
from services.deadlines.repository import SCHEMA
from shared.metrics import DEADLINE_BREACHES, DEADLINE_WARNINGS, SCHEDULER_LAG
from shared.outbox import enqueue_many
from shared.reference import LOCAL_AUTHORITY_SLUGS
from shared.settings import Settings

log = logging.getLogger(__name__)


class Clock(Protocol):
    async def now(self, conn: asyncpg.Connection) -> dt.datetime: ...


class DatabaseClock:
    """The database's clock: one time for every process."""

    async def now(self, conn: asyncpg.Connection) -> dt.datetime:
        return await conn.fetchval("SELECT now()")


class ShiftedClock:
    """The database's clock moved by `offset`, which a test may `advance` while the
    scheduler runs: time passes as it does, from a later starting point."""

    def __init__(self, offset: dt.timedelta = dt.timedelta()):
        self.offset = offset

    def advance(self, by: dt.timedelta) -> None:
        self.offset += by

    async def now(self, conn: asyncpg.Connection) -> dt.datetime:
        return await conn.fetchval("SELECT now() + $1::interval", self.offset)


class FixedClock:
    """A clock that stands still at `moment` until it is set."""

    def __init__(self, moment: dt.datetime):
        self.moment = moment

    async def now(self, conn: asyncpg.Connection) -> dt.datetime:
        return self.moment


async def fire(conn: asyncpg.Connection, now: dt.datetime, limit: int) -> list[asyncpg.Record]:
    """Inside the caller's transaction: claim what is due at `now`, move it on and
    enqueue its events. Returns the rows fired (status `breached`, or `open` = warned)."""
    rows = await repository.fire_due(conn, now, limit)
    if not rows:
        return rows
    recorded_at = await conn.fetchval("SELECT now()")
    # The deadlines of imported history carry the imported mark, as their other events do.
    for imported in (False, True):
        events = [
            deadline_event(
                "breached" if row["status"] == "breached" else "warning", row,
                received_at=_fire_time(row), recorded_at=recorded_at,
                breached_at=row["due_at"] if row["status"] == "breached" else None,
                causation_id=event_id(row["case_id"], row["rule"], row["sequence"], "opened"),
            )
            for row in rows if row["imported"] is imported
        ]
        if events:
            await enqueue_many(conn, SCHEMA, events, "deadlines", imported=imported)
    return rows


def _fire_time(row) -> dt.datetime:
    return row["due_at"] if row["status"] == "breached" else row["warn_at"]


def _observe(rows: list[asyncpg.Record], now: dt.datetime) -> None:
    fired = Counter((row["status"] == "breached", row["rule"], row["local_authority"]) for row in rows)
    for (breached, rule, local_authority), count in fired.items():
        (DEADLINE_BREACHES if breached else DEADLINE_WARNINGS).labels(rule, local_authority).inc(count)
    lag = {True: SCHEDULER_LAG.labels("breach"), False: SCHEDULER_LAG.labels("warning")}
    for row in rows:
        lag[row["status"] == "breached"].observe(max(0.0, (now - _fire_time(row)).total_seconds()))


class Scheduler:
    def __init__(
        self,
        clock: Clock | None = None,
        batch_size: int = 1000,
        max_sleep_seconds: float = 1.0,
        min_sleep_seconds: float = 0.02,
    ):
        self.clock = clock or DatabaseClock()
        self.batch_size = batch_size
        self.max_sleep_seconds = max_sleep_seconds
        self.min_sleep_seconds = min_sleep_seconds

    async def run_once(self, pool: asyncpg.Pool) -> int:
        """One round: one batch in one transaction. Returns how many fired."""
        async with pool.acquire() as conn:
            async with conn.transaction():
                now = await self.clock.now(conn)
                rows = await fire(conn, now, self.batch_size)
            if rows:
                _observe(rows, await self.clock.now(conn))
        return len(rows)

    async def run_until_idle(self, pool: asyncpg.Pool) -> int:
        """Rounds until nothing is due (for commands and tests); returns how many fired."""
        total = 0
        while fired := await self.run_once(pool):
            total += fired
        return total

    async def run(self, pool: asyncpg.Pool, settings: Settings | None = None) -> None:
        """The service's worker: fire what is due, then sleep until the next fire time
        (at most `max_sleep_seconds`, so new deadlines and clock changes are seen)."""
        # Every series at 0 from the start: a counter first seen at its first breach
        # would read as no increase in a dashboard's range.
        for rule in RULE_NAMES:
            for local_authority in LOCAL_AUTHORITY_SLUGS:
                DEADLINE_BREACHES.labels(rule, local_authority)
                DEADLINE_WARNINGS.labels(rule, local_authority)
        backoff = 0.1
        while True:
            try:
                fired = await self.run_once(pool)
                backoff = 0.1
                if fired >= self.batch_size:
                    continue
                await asyncio.sleep(await self._seconds_to_next(pool))
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as error:  # database away: wait, try again
                log.warning("deadline scheduler: %r; retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _seconds_to_next(self, pool: asyncpg.Pool) -> float:
        async with pool.acquire() as conn:
            earliest = await repository.earliest_fire(conn)
            if earliest is None:
                return self.max_sleep_seconds
            wait = (earliest - await self.clock.now(conn)).total_seconds()
        return min(self.max_sleep_seconds, max(self.min_sleep_seconds, wait))
