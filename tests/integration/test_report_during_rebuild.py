"""A report while `sir report rebuild` runs (real PostgreSQL, a Tansu of each test's own):
the report reads reporting's projections as they were before the rebuild or as rebuilt,
whole: never emptied, never a mix of the two.

The rebuild empties the projection tables with TRUNCATE, which is not MVCC-safe: a
transaction whose snapshot was taken before the TRUNCATE committed, and that first
touches the table after, finds it empty. A report reads in one snapshot (on several
connections) and adds up the summaries by month (emptied with DELETE, which is
MVCC-safe) with the rows of the months left over, so such a report would give the old
summaries plus nothing: figures no state of the platform ever had.

Each test holds one side at a chosen point: the report after its snapshot, before its
first query (`_PausedReads`, an asyncio event), or the rebuild just before its commit (a
lock the test holds on `case_positions`, the last table the rebuild empties); whether
the other side is waiting for a lock is read from pg_stat_activity.

The history: tests/integration/test_report_summaries.py's cases; the first part is
rebuilt into the projections (the figures before), the rest is then published, so the
rebuild under test changes every figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from services.reporting import commands, repository
from services.reporting.app import SERVICE
from services.reporting.queries import compute_all_cases, compute_cases, compute_national, compute_quarterly
from shared import devstack
from shared.db import COMMON, create_pool, migrate
from shared.messaging import ensure_topics
from shared.settings import Settings
from tests.integration.helpers import eventually
from tests.integration.test_report_summaries import _history, _topic

UTC = dt.timezone.utc
NOW = dt.datetime(2021, 7, 1, 12, tzinfo=UTC)  # every period ended
# Partial months at both ends: their days are read from the rows, the rest from the summaries.
PERIOD = (dt.date(2019, 11, 15), dt.date(2021, 2, 14))
CASES, BEFORE = 180, 110  # cases in the history; of them, those in the projections before


async def _national(pool, base: dict) -> dict:
    return await compute_national(pool, *PERIOD, now=NOW)


async def _quarterly(pool, base: dict) -> dict:
    return await compute_quarterly(pool, 2020, 3, now=NOW)


async def _drill_down(pool, base: dict) -> dict:
    """The HTML page's drill-down: the cases behind every figure and table row of `base`."""
    return await compute_all_cases(pool, base, None, 50)


async def _cases(pool, base: dict) -> dict:
    """The API's drill-down of one figure."""
    return await compute_cases(pool, *PERIOD, "notified_late", now=NOW)


Read = Callable[[asyncpg.Pool, dict], Awaitable[dict]]
READS: dict[str, Read] = {"national": _national, "quarterly": _quarterly, "drill_down": _drill_down}
# The reads that hold a snapshot over several statements (the API's drill-down of one
# figure is one statement: it cannot be paused after its snapshot).
SNAPSHOT_READS = ("national", "quarterly", "drill_down")


@dataclass
class Rebuilding:
    pool: asyncpg.Pool
    settings: Settings
    observer: asyncpg.Connection  # outside the pool: the report may hold all but one of it
    base: dict  # the national report before, whose figures the drill-down lists
    before: dict[str, dict]  # each read's answer before the rebuild

    def rebuild(self, settings: Settings | None = None) -> Awaitable[commands.RebuildResult]:
        return commands.rebuild(self.pool, settings or self.settings, idle_polls=2, poll_ms=200)


async def _publish(bootstrap: str, cases: list[list[dict]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False)
    await producer.start()
    try:
        for case in cases:
            for event in case:
                await producer.send(_topic(event), json.dumps(event).encode(), key=event["case_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
async def rebuilding(infra):
    """The projections rebuilt from the first part of the history, its figures read, and
    the rest of the history published: the next rebuild changes them."""
    database_url = infra.new_database()
    history = _history(CASES, seed=41)
    with devstack.Tansu() as tansu:
        settings = infra.settings(database_url, kafka_bootstrap=tansu.bootstrap)
        await ensure_topics(tansu.bootstrap, commands.TOPICS, settings.kafka_partitions)
        pool = await create_pool(database_url, max_size=5)  # a report reads on 4 of them
        observer = await asyncpg.connect(database_url)
        try:
            await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
            await _publish(tansu.bootstrap, history[:BEFORE])
            await commands.rebuild(pool, settings, idle_polls=2, poll_ms=200)
            base = await _national(pool, {})
            before = {kind: await read(pool, base) for kind, read in {**READS, "cases": _cases}.items()}
            await _publish(tansu.bootstrap, history[BEFORE:])
            yield Rebuilding(pool, settings, observer, base, before)
        finally:
            await observer.close()
            await pool.close()


class _PausedReads:
    """The queries a report sends on its snapshot's connections (repository.Readers)
    after the first `passing` wait until `go`: with none passing, the report has taken its
    snapshot and touched no table yet. Used as a context: `go` on the way out, whatever
    happened, so no report is left holding its connections."""

    def __init__(self, monkeypatch, passing: int = 0) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        fetch = repository.Readers.fetch
        sent = 0

        async def paused(readers, sql: str, *args):
            nonlocal sent
            sent += 1
            if sent > passing:
                self.reached.set()
                await self.go.wait()
            return await fetch(readers, sql, *args)

        monkeypatch.setattr(repository.Readers, "fetch", paused)

    def __enter__(self) -> _PausedReads:
        return self

    def __exit__(self, *exc) -> None:
        self.go.set()


@contextlib.asynccontextmanager
async def _started(coroutine: Awaitable, paused: _PausedReads | None = None) -> AsyncIterator[asyncio.Task]:
    """`coroutine` as a task, awaited (or cancelled, on a failure) before the test ends;
    the `paused` reads let go first."""
    task = asyncio.ensure_future(coroutine)
    try:
        yield task
    finally:
        if paused is not None:
            paused.go.set()
        if not task.done():
            await asyncio.wait([task], timeout=60)
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _waiting_for_locks(observer: asyncpg.Connection) -> list[str]:
    """The statements of this database waiting for a lock."""
    rows = await observer.fetch(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    return [r["query"] for r in rows]


async def _done_or_waiting(task: asyncio.Task, observer: asyncpg.Connection) -> bool:
    return task.done() or bool(await _waiting_for_locks(observer))


async def _processed_events_locked(observer: asyncpg.Connection) -> bool:
    """Whether anyone holds (or waits for) a lock on reporting's processed_events that
    would hold up the live consumers' writes."""
    return bool(await observer.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname = 'processed_events' AND l.mode <> 'AccessShareLock'",
        repository.SCHEMA,
    ))


@pytest.mark.parametrize("kind", SNAPSHOT_READS)
async def test_a_report_begun_before_a_rebuild_reads_the_figures_before_it(rebuilding, monkeypatch, kind):
    """The report has its snapshot when the rebuild starts: the rebuild waits for it (the
    live consumers meanwhile not held up) and the report reads the figures before, whole."""
    read = READS[kind]
    with _PausedReads(monkeypatch) as paused:
        async with _started(read(rebuilding.pool, rebuilding.base), paused) as report:
            await paused.reached.wait()
            async with _started(rebuilding.rebuild()) as rebuild:
                await eventually(lambda: _done_or_waiting(rebuild, rebuilding.observer),
                                 what="the rebuild to finish or wait for the report")
                rebuilt_under_the_report = rebuild.done()
                consumers_held = await _processed_events_locked(rebuilding.observer)
                paused.go.set()
                assert await report == rebuilding.before[kind]
                assert not rebuilt_under_the_report, "the rebuild emptied the projections under a report reading them"
                assert not consumers_held, "the live consumers wait with the rebuild for the report"
                await rebuild
    after = await read(rebuilding.pool, rebuilding.base)
    assert after != rebuilding.before[kind], "the rebuild changed the figures"


async def test_a_report_begun_before_a_rebuild_and_half_read_finishes_on_all_its_connections(rebuilding, monkeypatch):
    """Half-way through the report (the first queries read, the rest held on its other
    connections) the rebuild starts: the report reads its remaining tables on every
    connection while the rebuild waits (nothing of the rebuild stands in their way), and
    gives the figures before."""
    # Passing: the summaries' months (which reads `notifications`; the moment comes with the snapshot).
    with _PausedReads(monkeypatch, passing=1) as paused:
        async with _started(_quarterly(rebuilding.pool, rebuilding.base), paused) as report:
            await paused.reached.wait()
            async with _started(rebuilding.rebuild()) as rebuild:
                await eventually(lambda: _done_or_waiting(rebuild, rebuilding.observer),
                                 what="the rebuild to finish or wait for the report")
                paused.go.set()
                assert await report == rebuilding.before["quarterly"]
                await rebuild
    assert await _quarterly(rebuilding.pool, rebuilding.base) != rebuilding.before["quarterly"]


@pytest.mark.parametrize("kind", [*SNAPSHOT_READS, "cases"])
async def test_a_report_asked_for_during_a_rebuild_waits_and_reads_the_rebuilt_figures(rebuilding, kind):
    """The rebuild has emptied and filled the projections and not yet committed when the
    report is asked for: the report waits for the rebuild, then reads the rebuilt figures
    (the same as a report asked for after it), whole."""
    read = {**READS, "cases": _cases}[kind]
    blocker = await asyncpg.connect(rebuilding.settings.database_url)
    try:
        # The last table the rebuild empties: it waits there, everything else written.
        await blocker.execute(f"BEGIN; LOCK TABLE {repository.SCHEMA}.case_positions IN ACCESS SHARE MODE")
        async with _started(rebuilding.rebuild()) as rebuild:
            try:
                await eventually(lambda: _waiting_for_locks(rebuilding.observer), what="the rebuild to reach its end")
                async with _started(read(rebuilding.pool, rebuilding.base)) as report:
                    await eventually(lambda: _lock_waiters_at_least(rebuilding.observer, 2),
                                     what="the report to wait for the rebuild")
                    await blocker.execute("COMMIT")
                    await rebuild
                    during = await report
            finally:
                await blocker.execute("COMMIT")  # (a warning only, once committed)
    finally:
        await blocker.close()
    after = await read(rebuilding.pool, rebuilding.base)
    assert during == after
    assert after != rebuilding.before[kind]


async def _lock_waiters_at_least(observer: asyncpg.Connection, count: int) -> bool:
    return len(await _waiting_for_locks(observer)) >= count


async def test_a_rebuild_waits_for_a_long_report_only_so_long_and_changes_nothing(rebuilding, monkeypatch):
    """A report that outlasts the rebuild's lock timeout: the rebuild gives up with an error
    that says why, having changed nothing; the report reads the figures before."""
    impatient = rebuilding.settings.model_copy(update={"rebuild_lock_timeout_seconds": 0.2})
    with _PausedReads(monkeypatch) as paused:
        async with _started(_national(rebuilding.pool, rebuilding.base), paused) as report:
            await paused.reached.wait()
            with pytest.raises(commands.RebuildBlocked, match="report"):
                await rebuilding.rebuild(impatient)
            paused.go.set()
            assert await report == rebuilding.before["national"]
    assert await _national(rebuilding.pool, rebuilding.base) == rebuilding.before["national"]
    # The next rebuild, with no report in its way, goes through.
    await rebuilding.rebuild()
    assert await _national(rebuilding.pool, rebuilding.base) != rebuilding.before["national"]


@dataclass
class GateHeld:
    pool: asyncpg.Pool
    observer: asyncpg.Connection  # outside the pool
    rebuild: asyncpg.Connection  # holds the gate, as a rebuild does until its commit


@contextlib.asynccontextmanager
async def _gate_held(infra, pool_size: int) -> AsyncIterator[GateHeld]:
    """A migrated database whose rebuild gate a transaction holds (`COMMIT` on
    `rebuild` lets it go), and a service pool of `pool_size`."""
    database_url = infra.new_database()
    pool = await create_pool(database_url, max_size=pool_size)
    observer = await asyncpg.connect(database_url)
    rebuild = await asyncpg.connect(database_url)
    try:
        await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
        await rebuild.execute("BEGIN")
        await repository.shut_out_reports(rebuild)
        yield GateHeld(pool, observer, rebuild)
    finally:
        await rebuild.close()
        await observer.close()
        await pool.close()


def _a_report(pool: asyncpg.Pool) -> Awaitable[dict]:
    return compute_national(pool, dt.date(2021, 1, 1), dt.date(2021, 12, 31))


async def test_a_report_that_waited_for_a_rebuild_is_made_at_the_moment_it_reads(infra):
    """A report asked for while a rebuild holds the gate waits for its commit and reads
    what is committed then: its moment (`generated_at`, the moment a running period is
    counted to, never beyond) is then too, not the moment its first connection began its
    transaction and started waiting (now(), up to the rebuild's write and lock timeout
    earlier), or it would count what was recorded after the moment it says it was made at."""
    async with _gate_held(infra, pool_size=5) as held, _started(_a_report(held.pool)) as report:
        # Seen waiting: its transaction began before this moment, its snapshot comes after.
        await eventually(lambda: _waiting_for_locks(held.observer), what="the report to wait for the rebuild")
        committed = await held.rebuild.fetchval("SELECT clock_timestamp()")
        await held.rebuild.execute("COMMIT")
        made = dt.datetime.fromisoformat((await report)["generated_at"])
    assert made >= committed, f"made at {made}, though it read what was committed at {committed}"


async def test_reports_waiting_for_a_rebuild_leave_the_pool_to_the_live_consumers(infra):
    """Three reports asked for while a rebuild holds the gate: one waits there holding its
    connections, the others wait for it holding none, so the service's pool still lends
    the live consumers theirs (before, each report took its four and waited at the gate:
    two held eight of ten, the third the last two)."""
    async with _gate_held(infra, pool_size=10) as held, contextlib.AsyncExitStack() as started:  # 4 a report
        for _ in range(3):
            await started.enter_async_context(_started(_a_report(held.pool)))
        await eventually(lambda: _waiting_for_locks(held.observer), what="a report to wait for the rebuild")
        await asyncio.sleep(0.5)  # the others' turn to take what connections they would
        # The live consumers' share: bounded, so starvation fails rather than hangs.
        lent = [await held.pool.acquire(timeout=20) for _ in range(5)]
        for connection in lent:
            await held.pool.release(connection)
        await held.rebuild.execute("COMMIT")
