"""The shell around every consumer's decider (shared/decider.py): load, decide, record.

The idempotent consumer (shared/consumer.py) hands a `Process` the events whose turn has
come, inside the transaction that marks them processed. The process loads the states of
their cases (one query, locked until the transaction ends), folds the events through the
pure decider, saves the states that changed and appends the emitted events to the
service's store and outbox — all in that one transaction, so an event's effects are
recorded exactly once or not at all (as eventsourcing's process applications do).

Handlers hold no SQL: a service gives its decider (domain.py), and its loader and saver
(repository.py); this module is the only place they meet.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic

import asyncpg

from shared.decider import Addressed, Context, Decide, Event, State, fold
from shared.outbox import enqueue_many

Load = Callable[[asyncpg.Connection, list[uuid.UUID]], Awaitable[dict[uuid.UUID, State]]]
# (conn, before, after) of the cases whose state changed; `before` holds the loader's state.
Save = Callable[[asyncpg.Connection, Mapping[uuid.UUID, State], Mapping[uuid.UUID, State]], Awaitable[None]]


__all__ = ["Addressed", "Load", "Process", "Save", "record_emitted"]


@dataclass(frozen=True)
class Process(Generic[State]):
    """One consumer: `decide` between `load` and `save`; `service` names the schema whose
    store and outbox the emitted events go to (and their CloudEvents source)."""

    service: str
    decide: Decide[State]
    load: Load[State]
    save: Save[State]
    # The events the decider acts on; the others are marked processed and nothing more
    # (no state is loaded for them).
    wants: Callable[[Event], bool] = lambda event: True

    async def apply(self, conn: asyncpg.Connection, arrivals: Sequence[tuple[Event, bool]]) -> None:
        """Decide and record `arrivals` — (event, imported) in the order to apply them —
        in the caller's transaction."""
        relevant = [(event, imported) for event, imported in arrivals if self.wants(event)]
        if not relevant:
            return
        now: dt.datetime = await conn.fetchval("SELECT now()")
        before = await self.load(conn, list(dict.fromkeys(event.case_id for event, _ in relevant)))
        folded = fold(self.decide, before, [(event, Context(now, imported)) for event, imported in relevant])
        if folded.changed:
            await self.save(
                conn,
                {case: before[case] for case in folded.changed},
                {case: folded.states[case] for case in folded.changed},
            )
        await record_emitted(conn, self.service, [(out, context.imported) for out, context in folded.emitted])


async def record_emitted(conn: asyncpg.Connection, service: str, emitted: Sequence[tuple[Any, bool]]) -> None:
    """Append emitted events (each an Envelope or `Addressed`, with its imported mark) to
    the service's store and outbox in their order, one statement per run of one topic
    override and mark."""

    def kind(item: tuple[Any, bool]) -> tuple[str | None, bool]:
        out, imported = item
        return (out.topic if isinstance(out, Addressed) else None, imported)

    for (topic, imported), run in itertools.groupby(emitted, key=kind):
        events = [out.event if isinstance(out, Addressed) else out for out, _ in run]
        await enqueue_many(conn, service, events, service, imported=imported, topic=topic)
