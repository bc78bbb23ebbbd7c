"""Deadlines' consumer: the pure decider `domain.decide` behind the shell
(shared/process.py), between `repository.load_cases` and `repository.save_cases`.

Case events and routing events open, meet and cancel deadlines as the rules file says;
the deadline events are recorded with the change, in the transaction that marks the
events processed. No SQL here: the decision is domain.py's, the reads and writes are
repository.py's.
"""

from __future__ import annotations

import datetime as dt
from functools import partial

import asyncpg

from services.deadlines import domain, repository
from services.deadlines.domain import CaseDeadlines
from shared.consumer import Delivery, Handler
from shared.events import Envelope
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS
from shared.process import Process
from shared.settings import Settings, get_settings

SERVICE = "deadlines"


def process(settings: Settings) -> Process[CaseDeadlines]:
    """The consumer, with the settings' import hold bound into the decider."""
    return Process(
        service=SERVICE,
        decide=partial(domain.decide, settle=dt.timedelta(seconds=settings.import_settle_seconds)),
        load=repository.load_cases,
        save=repository.save_cases,
        wants=domain.wants,
    )


async def on_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    """One event through the process, in the caller's transaction (for callers that hand
    events one at a time: tests, and appliers given a plain handler)."""
    await process(get_settings()).apply(conn, [(event, delivery.imported)])


def consumes(settings: Settings) -> dict[str, Handler | Process]:
    """The topics deadlines reads, each through the one process: a case's start and stop
    may come on either (the lock in `repository.load_cases` keeps the two apart)."""
    deadlines = process(settings)
    return {CASE_EVENTS: deadlines, ROUTING_EVENTS: deadlines}
