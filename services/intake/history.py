"""History import (SPEC §7): NDJSON of SPEC §3 events with their historical received_at.

Each line is validated as a live event is; lines are grouped by case, a case's events
are put in order of received_at (then of the file) and go through intake's one append
path (`service.import_cases`: lock → the lifecycle's next case → `append_to_case`) as live
events do, marked imported (routing does not deliver them again), many cases to a
transaction and the events of them all stored with one statement. A case goes in whole or not at all: one bad line refuses its
case, while the other cases still go in. Importing the same history twice changes
nothing: events already stored (same event_id, same content) are skipped.

Besides case events, history may carry `notification.forwarded` records, the forwarding
that already happened, so the forwarding figures hold for imported periods too; they are
stored with their case (which must be in the store or in the file) and published to
`sir.routing.v1`.

Streaming, in bounded memory whatever the size of the file: a case's lines may be spread
over the whole file, and one bad line anywhere refuses its case, so nothing is stored
before the last line is read. Pass 1 reads the input in chunks, validates each line and
spools the valid ones into a temporary table of the import's connection (COPY, in
batches), remembering only which cases have a bad line and a short digest of each event
(to find repeats). Pass 2 reads the spooled cases back 200 at a time, skipping the
refused ones, and stores them in one transaction (`writers`: by that many more
connections at once, each a batch while the next is read): the cases locked and read with one
statement, their events appended with one (a case the lifecycle refuses is left out
whole; should the database refuse the batch, case by case, each in its own savepoint).

No line can make the import fail: whatever is wrong with one (not JSON, nested too
deeply, a NUL character, a lone surrogate, a number out of range, too long, a value the
database refuses) refuses its case with the line's number and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
from asyncpg.pgproto.pgproto import UUID as FastUUID

from services.intake import repository, service
from services.intake.history_lines import BadLine, Event, LineReader, printable, read_lines
from shared.events import ANY_EVENT, Envelope
from shared.logs import event_fields
from shared.metrics import EVENTS_RECORDED
from shared.settings import get_settings

log = logging.getLogger(__name__)

# Largest body `POST /v1/import` takes; bigger files go through `sir import`.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Cases written per transaction, their events with one statement (all of a case or nothing).
CASES_PER_TRANSACTION = 200
# Lines validated and spooled together (one COPY).
LINES_PER_BATCH = 2000
# Batches a checker process is given ahead (`import_history(checkers=...)`), so that it
# reads the next while this process spools the one before.
BATCHES_AHEAD_A_CHECKER = 2


class TooLarge(Exception):
    """The input is larger than the caller allows (nothing was stored)."""


@dataclass(frozen=True)
class LineError:
    line: int
    case_id: str | None
    reason: str


@dataclass
class Report:
    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    lines: int = 0
    errors: list[LineError] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "imported": self.imported,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "errors": [vars(e) for e in sorted(self.errors, key=lambda e: e.line)],
        }


# Called with (lines read, events stored) after each batch: `sir import` shows progress.
Progress = Callable[[int, int], None]


class Spooled(NamedTuple):
    """A valid line, as pass 2 will read it back (a tuple: made for every line, and a
    frozen dataclass's __init__ cost more than checking the line's encoding)."""

    line: int
    case_id: uuid.UUID
    envelope: str  # the validated event as JSON


class Validator:
    """Pass 1's memory: the bad lines, the refused cases and a digest of each event seen.
    It reads a line itself (`check`) or takes what a checker process read (`admit`)."""

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.reader = LineReader(max_line_bytes)
        self.errors: list[LineError] = []
        self.refused: set[uuid.UUID] = set()
        # Lines repeating an earlier line of the file (same event_id and content), by
        # case: skipped, or rejected with the rest of a refused case.
        self.repeated: Counter[uuid.UUID] = Counter()
        # event_id -> digest of its content: 16 + 8 bytes an event, not the event.
        self._seen: dict[bytes, bytes] = {}

    def check(self, number: int, raw: bytes | str | None) -> Spooled | None:
        """The line to spool, or None (blank, repeated, or refused with its reason)."""
        return self.admit(self.reader.read(number, raw))

    def read(self, batch: Sequence[tuple[int, bytes | None]]) -> list[Event | BadLine | None]:
        """`LineReader.read` of each line of `batch` (in a thread: it keeps no memory)."""
        return [self.reader.read(number, raw) for number, raw in batch]

    def admit(self, read: Event | BadLine | None) -> Spooled | None:
        """What reading a line found (here or in a checker process), against the lines
        before it: the line to spool, or None. Lines are admitted in the file's order."""
        if read is None:
            return None
        if isinstance(read, BadLine):
            self._refuse(read.line, read.case_id, read.reason)
            return None
        # asyncpg's UUID: made from the bytes in C (uuid.UUID's are Python), equal to and
        # hashed as the uuid.UUID it stands for.
        case_id = FastUUID(read.case_id)
        earlier = self._seen.get(read.event_id)
        if earlier is not None and earlier != read.digest:
            self._refuse(
                read.line, case_id, f"event {uuid.UUID(bytes=read.event_id)} appears earlier in the file with other content"
            )
            return None
        if earlier is not None:
            self.repeated[case_id] += 1
            return None
        self._seen[read.event_id] = read.digest
        return Spooled(read.line, case_id, read.content)

    def _refuse(self, number: int, case_id: uuid.UUID | None, reason: str) -> None:
        self.errors.append(LineError(number, str(case_id) if case_id else None, printable(reason)))
        if case_id is not None:
            self.refused.add(case_id)


async def import_history(
    pool: asyncpg.Pool,
    chunks: AsyncIterable[bytes] | Iterable[bytes],
    *,
    max_line_bytes: int = 1_000_000,
    max_bytes: int | None = None,
    progress: Progress | None = None,
    writers: int = 0,
    checkers: int = 0,
) -> Report:
    """Import the NDJSON `chunks` (any split), each case whole or not at all.

    `writers`: connections of `pool` that store batches of cases at the same time, beside
    the one that spools and reads the spool back (0: that one stores them too, one batch
    after another). With some, the database writes one batch while this process reads
    and decides the next (`sir import`; the API keeps to one connection a request).
    `checkers`: processes that read and validate the lines in pass 1, a batch each, while
    this one spools the batches before (0: a thread of this process reads them, one batch
    at a time). Validation is most of pass 1, and Python runs it on one core at a time.

    Raises TooLarge (having stored nothing) when the input exceeds `max_bytes`.
    """
    validator = Validator(max_line_bytes)
    report = Report()
    async with pool.acquire() as conn:
        await conn.execute(
            "DROP TABLE IF EXISTS import_spool;"
            " CREATE TEMPORARY TABLE import_spool (line int, case_id uuid, envelope text)"
        )
        try:
            async with _checker_processes(checkers) as processes:
                await _spool(conn, validator, _lines(chunks, max_line_bytes, max_bytes), report, progress, processes)
            async with contextlib.AsyncExitStack() as stack:
                others = [await stack.enter_async_context(pool.acquire()) for _ in range(writers)]
                await _store(conn, validator, report, progress, others)
        finally:
            if not conn.is_closed():
                await conn.execute("DROP TABLE IF EXISTS import_spool")
    log.info(
        "history import: %d lines, %d imported, %d skipped, %d rejected",
        report.lines, report.imported, report.skipped, report.rejected,
    )
    return report


@dataclass(frozen=True)
class _Checkers:
    """Processes reading lines for pass 1 (`history_lines.read_lines`)."""

    processes: Executor
    count: int
    ready: asyncio.Future  # done once one has started (until then this process reads)


@contextlib.asynccontextmanager
async def _checker_processes(count: int) -> AsyncIterator[_Checkers | None]:
    """`count` processes that read lines, or None for none. Forked from a server process
    that loaded history_lines once (no copy of this process's threads and connections,
    and one start-up for them all); each ends when the import's process does."""
    if not count:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["services.intake.history_lines"])
    processes = ProcessPoolExecutor(count, mp_context=context, initializer=_end_with_parent)
    # Started by a thread: the first submit waits for the server to load its modules.
    ready = asyncio.ensure_future(asyncio.to_thread(lambda: processes.submit(os.getpid).result()))
    try:
        yield _Checkers(processes, count, ready)
    except BaseException:
        processes.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        ready.cancel()
    # After pass 1 they have nothing left to do: gone before pass 2 begins.
    await asyncio.to_thread(processes.shutdown)


def _end_with_parent() -> None:
    """In a checker process: exit once its parent has gone (the import's process was
    killed, say, and the server process it was forked from ended with it) rather than
    wait for batches for ever."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="end-with-parent").start()


async def _spool(
    conn: asyncpg.Connection, validator: Validator, lines: AsyncIterator[tuple[int, bytes | None]], report: Report,
    progress: Progress | None, checkers: _Checkers | None,
) -> None:
    """Pass 1: validate every line, spool the valid ones; nothing is stored yet. Batches
    are read by `checkers` ahead of this loop (once they have started; until then, and
    without them, by a thread, a batch at a time), which admits each batch's lines in the
    file's order (`Validator.admit`: repeats across batches) and spools them."""
    loop = asyncio.get_running_loop()
    ahead = 0  # batches being read besides the one to spool next
    reading: deque[tuple[int, asyncio.Future[list[Event | BadLine | None]]]] = deque()  # in the file's order

    def read(batch: list[tuple[int, bytes | None]]) -> asyncio.Future[list[Event | BadLine | None]]:
        nonlocal ahead
        if checkers is not None and checkers.ready.done() and not checkers.ready.exception():
            ahead = checkers.count * BATCHES_AHEAD_A_CHECKER
            return loop.run_in_executor(checkers.processes, read_lines, batch, validator.max_line_bytes)
        # Validation is CPU work: off the event loop, so a service answers meanwhile.
        return asyncio.ensure_future(asyncio.to_thread(validator.read, batch))

    async def spool_oldest() -> None:
        last_line, batch_read = reading.popleft()
        spooled = [s for line_read in await batch_read if (s := validator.admit(line_read))]
        if spooled:
            await conn.copy_records_to_table("import_spool", records=spooled)
        report.lines = last_line
        if progress:
            progress(report.lines, 0)

    batch: list[tuple[int, bytes | None]] = []
    try:
        async for number, raw in lines:
            batch.append((number, raw))
            if len(batch) >= LINES_PER_BATCH:
                reading.append((number, read(batch)))
                batch = []
                while len(reading) > ahead:
                    await spool_oldest()
        if batch:
            reading.append((batch[-1][0], read(batch)))
        while reading:
            await spool_oldest()
    finally:
        for _, batch_read in reading:  # a failure: what is still being read is not wanted
            batch_read.cancel()


async def _store(
    conn: asyncpg.Connection, validator: Validator, report: Report, progress, writers: Sequence[asyncpg.Connection]
) -> None:
    """Pass 2: the spooled cases that had no bad line, 200 to a transaction, stored by
    `writers` (each a batch at a time, while `conn` reads the next), or by `conn`."""
    report.errors = validator.errors
    report.rejected = len(validator.errors)
    if validator.refused:
        refused = list(validator.refused)
        dropped = await conn.fetchval(
            "WITH gone AS (DELETE FROM import_spool WHERE case_id = ANY($1::uuid[]) RETURNING 1)"
            " SELECT count(*) FROM gone",
            refused,
        )
        # Their bad lines are counted already; the rest of each refused case with them.
        report.rejected += dropped + sum(validator.repeated[c] for c in refused)
    report.skipped += sum(n for c, n in validator.repeated.items() if c not in validator.refused)
    await conn.execute("CREATE INDEX ON import_spool (case_id, line)")
    if not writers:
        async for cases in _spooled_cases(conn):
            await _store_batch(conn, cases, report, progress)
        return
    # Each batch to the first writer free; at most one batch read ahead a writer.
    batches: asyncio.Queue[dict[uuid.UUID, list[tuple[int, Envelope]]] | None] = asyncio.Queue(len(writers))

    async def read() -> None:
        async for cases in _spooled_cases(conn):
            await batches.put(cases)
        for _ in writers:
            await batches.put(None)

    async def write(writer: asyncpg.Connection) -> None:
        while (cases := await batches.get()) is not None:
            await _store_batch(writer, cases, report, progress)

    try:
        async with asyncio.TaskGroup() as group:  # one failing stops the others
            group.create_task(read())
            for writer in writers:
                group.create_task(write(writer))
    except ExceptionGroup as failed:  # the first failure, as with one connection (the caller reports it)
        raise failed.exceptions[0] from None


async def _spooled_cases(conn: asyncpg.Connection) -> AsyncIterator[dict[uuid.UUID, list[tuple[int, Envelope]]]]:
    """The spooled cases, 200 at a time, each with its (line, event)s in file order."""
    after = uuid.UUID(int=0)
    while True:
        case_ids = [r["case_id"] for r in await conn.fetch(
            "SELECT DISTINCT case_id FROM import_spool WHERE case_id > $1 ORDER BY case_id LIMIT $2",
            after, CASES_PER_TRANSACTION,
        )]
        if not case_ids:
            return
        after = case_ids[-1]
        rows = await conn.fetch(
            "SELECT case_id, line, envelope FROM import_spool WHERE case_id = ANY($1::uuid[]) ORDER BY case_id, line",
            case_ids,
        )
        cases: dict[uuid.UUID, list[tuple[int, Envelope]]] = {}
        for row in rows:
            cases.setdefault(row["case_id"], []).append((row["line"], ANY_EVENT.validate_json(row["envelope"])))
        yield cases


async def _store_batch(
    conn: asyncpg.Connection, cases: dict[uuid.UUID, list[tuple[int, Envelope]]], report: Report, progress
) -> None:
    recorded = await _store_cases(conn, cases, report)
    report.imported += len(recorded)
    for event_type, count in Counter(event.event_type for event in recorded).items():
        EVENTS_RECORDED.labels(event_type).inc(count)
    if log.isEnabledFor(logging.DEBUG):
        for event in recorded:
            log.debug("imported %s", event.event_type, extra=event_fields(event))
    if progress:
        progress(report.lines, report.imported)


async def _store_cases(
    conn: asyncpg.Connection, cases: dict[uuid.UUID, list[tuple[int, Envelope]]], report: Report
) -> list[Envelope]:
    """The cases through intake's one append path (service.import_cases), in one
    transaction: every case whole or not at all."""
    async with conn.transaction():
        now = await repository.now(conn)
        imported = await service.import_cases(conn, cases, now, max_bytes=get_settings().max_message_bytes)
    report.skipped += imported.skipped
    for case_id, refusal in imported.refused:
        report.rejected += len(cases[case_id])
        report.errors.append(LineError(refusal.line, str(case_id), printable(str(refusal))))
    return imported.events


async def _lines(
    chunks: AsyncIterable[bytes] | Iterable[bytes], max_line_bytes: int, max_bytes: int | None
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(number from 1, line) for each line of the chunks; None for a line longer than
    `max_line_bytes`, which is skipped without being held in memory."""
    buffer = bytearray()
    number, total, too_long = 0, 0, False
    async for chunk in _each(chunks):
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise TooLarge(f"at most {max_bytes} bytes")
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            number += 1
            yield number, None if too_long or end - start > max_line_bytes else bytes(buffer[start:end])
            too_long = False
            start = end + 1
        del buffer[:start]
        if len(buffer) > max_line_bytes:
            too_long = True
            buffer.clear()
    if buffer or too_long:
        yield number + 1, None if too_long else bytes(buffer)


async def _each(chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0)


def read_file(path, chunk_bytes: int = 1 << 20) -> Iterable[bytes]:
    """A file's bytes in chunks of 1 MiB (for `sir import`)."""
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            yield chunk
