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
import hashlib
import json
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
from pydantic import ValidationError

from services.intake import repository, service
from services.intake.domain import FORWARDED
from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope
from shared.logs import event_fields
from shared.metrics import EVENTS_RECORDED
from shared.settings import get_settings

log = logging.getLogger(__name__)

IMPORTABLE = frozenset(CASE_EVENT_MODELS) | {FORWARDED}
# Largest body `POST /v1/import` takes; bigger files go through `sir import`.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Cases written per transaction, their events with one statement (all of a case or nothing).
CASES_PER_TRANSACTION = 200
# Lines validated and spooled together (one COPY).
LINES_PER_BATCH = 2000
# Fields of a line that intake sets itself when it stores the event.
REASSIGNED = {"sequence", "case_after"}
# A reason is about the line, never a copy of it: long values are cut.
MAX_REASON_CHARS = 300

# What PostgreSQL's jsonb cannot store, as JSON text spells it: \u0000 and a UTF-16
# surrogate escape (only a valid pair survives json.loads as one character). A number
# that is not finite (1e400, Infinity, NaN) is seen as it is parsed (`Validator._float`):
# a pattern for exponents also matched the hex digits of most UUIDs ("e123"), so half of
# all lines were walked for nothing (issue 15).
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


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
    """Pass 1's memory: the bad lines, the refused cases and a digest of each event seen."""

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.errors: list[LineError] = []
        self.refused: set[uuid.UUID] = set()
        # Lines repeating an earlier line of the file (same event_id and content), by
        # case: skipped, or rejected with the rest of a refused case.
        self.repeated: Counter[uuid.UUID] = Counter()
        # event_id -> digest of its content: 16 + 8 bytes an event, not the event.
        self._seen: dict[bytes, bytes] = {}
        # json.loads with hooks that note a number that is not finite in the line parsed.
        self._decoder = json.JSONDecoder(parse_float=self._float, parse_constant=self._float)
        self._not_finite = False

    def _float(self, text: str) -> float:
        value = float(text)
        if value != value or value in (math.inf, -math.inf):
            self._not_finite = True
        return value

    def _loads(self, raw: bytes | str) -> object:
        """json.loads(raw), noting in `_not_finite` whether a number is not finite."""
        self._not_finite = False
        if isinstance(raw, str):
            if raw.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
            return self._decoder.decode(raw)
        # A line that begins with "{" then a byte other than NUL is UTF-8 (what
        # json.detect_encoding decides for it, without its calls: issue 15).
        utf8 = raw[:1] == b"{" and raw[1:2] not in (b"\x00", b"")
        return self._decoder.decode(raw.decode("utf-8" if utf8 else json.detect_encoding(raw), "surrogatepass"))

    def check(self, number: int, raw: bytes | str | None) -> Spooled | None:
        """The line to spool, or None (blank, repeated, or refused with its reason)."""
        if raw is None:
            self._refuse(number, None, f"longer than {self.max_line_bytes} bytes: one event a line")
            return None
        if not raw.strip():
            return None
        try:
            obj = self._loads(raw)
        except RecursionError:
            self._refuse(number, None, "not JSON this platform reads: nested too deeply")
            return None
        except ValueError as error:  # also bad UTF-8 and integers of thousands of digits
            self._refuse(number, None, f"not JSON: {error}")
            return None
        try:
            if self._not_finite or _SUSPECT.search(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
                _check_storable(obj)
            event = _validate(obj)
            # What pass 2 reads back, and what must match for a repeat: the event without
            # what intake gives it (sequence, case_after; recorded_at is received_at here),
            # so equal to another line's exactly when `event_content` is.
            content = event.model_dump_json(exclude=REASSIGNED)
        # The case a refused line names is read only then (a uuid.UUID made from text,
        # about 1 µs, was made for every line).
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            self._refuse(number, _case_id_of(obj), _explain(error))
            return None
        except Exception as error:
            self._refuse(number, _case_id_of(obj), f"cannot be read: {type(error).__name__}")
            return None
        digest = hashlib.blake2b(content.encode(), digest_size=8).digest()
        earlier = self._seen.get(event.event_id.bytes)
        if earlier is not None and earlier != digest:
            self._refuse(number, event.case_id, f"event {event.event_id} appears earlier in the file with other content")
            return None
        if earlier is not None:
            self.repeated[event.case_id] += 1
            return None
        self._seen[event.event_id.bytes] = digest
        return Spooled(number, event.case_id, content)

    def _refuse(self, number: int, case_id: uuid.UUID | None, reason: str) -> None:
        self.errors.append(LineError(number, str(case_id) if case_id else None, _printable(reason)))
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
) -> Report:
    """Import the NDJSON `chunks` (any split), each case whole or not at all.

    `writers`: connections of `pool` that store batches of cases at the same time, beside
    the one that spools and reads the spool back (0: that one stores them too, one batch
    after another). With some, the database writes one batch while this process reads
    and decides the next (`sir import`; the API keeps to one connection a request).

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
            await _spool(conn, validator, _lines(chunks, max_line_bytes, max_bytes), report, progress)
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


async def _spool(conn, validator: Validator, lines: AsyncIterator[tuple[int, bytes | None]], report, progress) -> None:
    """Pass 1: validate every line, spool the valid ones; nothing is stored yet."""
    batch: list[tuple[int, bytes | None]] = []

    async def flush() -> None:
        # Validation is CPU work: off the event loop, so a service answers meanwhile.
        spooled = await asyncio.to_thread(lambda: [s for n, raw in batch if (s := validator.check(n, raw))])
        if spooled:
            await conn.copy_records_to_table(
                "import_spool", records=[(s.line, s.case_id, s.envelope) for s in spooled]
            )
        report.lines = batch[-1][0]
        batch.clear()
        if progress:
            progress(report.lines, 0)

    async for number, raw in lines:
        batch.append((number, raw))
        if len(batch) >= LINES_PER_BATCH:
            await flush()
    if batch:
        await flush()


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
        report.errors.append(LineError(refusal.line, str(case_id), _printable(str(refusal))))
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


def _validate(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise ValueError("a line is one JSON object: an event in the SPEC §3 format")
    event_type = obj.get("event_type")
    if not isinstance(event_type, str) or event_type not in IMPORTABLE:
        raise ValueError(
            f"event_type {_printable(repr(event_type))[:80]} is not imported: history carries case events"
            " and notification.forwarded records"
        )
    # recorded_at is the platform's: it becomes the time of the import.
    return ANY_EVENT.validate_python(obj | {"recorded_at": obj.get("received_at")})


def _check_storable(value: object, path: str = "") -> None:
    """Refuse, naming the field, what PostgreSQL's jsonb cannot store (and JSON cannot
    carry): a NUL character, a lone surrogate, a number that is not finite."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, path or "(event)")
            _check_storable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}.{index}")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{_printable(path)}: contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{_printable(path)}: contains a lone surrogate (not a Unicode character)") from None
    elif isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise ValueError(f"{_printable(path)}: not a finite number")


def _case_id_of(obj: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(obj["case_id"]))  # type: ignore[index]
    except (TypeError, KeyError, ValueError, IndexError):
        return None


def _explain(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in error.errors()[:5]
        )
    return str(error)


def _printable(text: str) -> str:
    """The reason as safe text: control characters and lone surrogates escaped, and cut."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
