"""Test clocks for the deadline scheduler's `now` port (services/deadlines/scheduler.py):
async callables given the scheduler's connection, returning the time to fire against."""

from __future__ import annotations

import datetime as dt

import asyncpg


class ShiftedClock:
    """The database's clock moved by `offset`, which a test may `advance` while the
    scheduler runs: time passes as it does, from a later starting point."""

    def __init__(self, offset: dt.timedelta = dt.timedelta()):
        self.offset = offset

    def advance(self, by: dt.timedelta) -> None:
        self.offset += by

    async def __call__(self, conn: asyncpg.Connection) -> dt.datetime:
        return await conn.fetchval("SELECT now() + $1::interval", self.offset)


class FixedClock:
    """A clock that stands still at `moment` until it is set."""

    def __init__(self, moment: dt.datetime):
        self.moment = moment

    async def __call__(self, conn: asyncpg.Connection) -> dt.datetime:
        return self.moment
