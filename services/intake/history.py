"""History import (SPEC §7): NDJSON of SPEC §3 events with their historical received_at.

Each line is validated as a live event is; lines are grouped by case, a case's events
are put in order of received_at (then of the file) and go through the same state
machine and the same `repository.append` as live events, marked imported (routing does
not deliver them again). A case goes in whole or not at all: one bad line refuses its
case, while the other cases still go in. Importing the same history twice changes
nothing: events already stored (same event_id, same content) are skipped.

Besides case events, history may carry `notification.forwarded` records, the forwarding
that already happened, so the forwarding figures hold for imported periods too; they are
stored with their case (which must be in the store or in the file) and published to
`sir.routing.v1`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

import asyncpg
from pydantic import ValidationError

from services.intake import repository
from services.intake.domain import FORWARDED, next_case
from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope
from shared.lifecycle import Refused
from shared.logs import event_fields
from shared.metrics import EVENTS_RECORDED

log = logging.getLogger(__name__)

IMPORTABLE = frozenset(CASE_EVENT_MODELS) | {FORWARDED}
# Largest body `POST /v1/import` takes; bigger files go through `sir import`, which streams.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Cases written per transaction, each in its own savepoint (all of a case or nothing).
CASES_PER_TRANSACTION = 200


@dataclass(frozen=True)
class LineError:
    line: int
    case_id: str | None
    reason: str


@dataclass(frozen=True)
class _Line:
    number: int
    event: Envelope


@dataclass
class History:
    """A parsed file: the valid lines grouped by case, and the lines refused already."""

    cases: dict[uuid.UUID, list[_Line]] = field(default_factory=dict)
    errors: list[LineError] = field(default_factory=list)
    # Cases with a bad line: none of their lines goes in.
    refused: set[uuid.UUID] = field(default_factory=set)
    # Lines that repeat an earlier line of the file (same event_id and content), by case:
    # skipped, or rejected with the rest of a refused case.
    repeated: Counter[uuid.UUID] = field(default_factory=Counter)


@dataclass
class Report:
    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    errors: list[LineError] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "imported": self.imported,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "errors": [vars(e) for e in sorted(self.errors, key=lambda e: e.line)],
        }


class _CaseRefused(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line


def parse(lines: Iterable[bytes | str]) -> History:
    """Validate each line (1-based numbers; blank lines are ignored) and group by case."""
    history = History()
    seen: dict[uuid.UUID, str] = {}  # event_id -> its content, to find repeats in the file
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as error:
            history.errors.append(LineError(number, None, f"not JSON: {error}"))
            continue
        case_id = _case_id_of(obj)
        try:
            event = _validate(obj)
            content = _content(event)
            earlier = seen.get(event.event_id)
            if earlier is not None and earlier != content:
                raise ValueError(f"event {event.event_id} appears earlier in the file with other content")
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            history.errors.append(LineError(number, str(case_id) if case_id else None, _explain(error)))
            if case_id is not None:
                history.refused.add(case_id)
            continue
        if earlier is not None:
            history.repeated[event.case_id] += 1
            continue
        seen[event.event_id] = content
        history.cases.setdefault(event.case_id, []).append(_Line(number, event))
    return history


async def import_history(pool: asyncpg.Pool, history: History) -> Report:
    """Store the history's cases, each whole or not at all; returns the counts and errors."""
    report = Report(errors=list(history.errors))
    report.rejected = len(history.errors)
    cases = []
    for case_id, lines in history.cases.items():
        if case_id in history.refused:
            report.rejected += len(lines) + history.repeated[case_id]  # its bad line is reported already
        else:
            report.skipped += history.repeated[case_id]
            cases.append((case_id, lines))
    for chunk in _chunks(cases, CASES_PER_TRANSACTION):
        recorded: list[Envelope] = []
        async with pool.acquire() as conn, conn.transaction():
            now = await repository.now(conn)
            for case_id, lines in chunk:
                try:
                    events, skipped = await _import_case(conn, lines, now)
                except _CaseRefused as refusal:
                    report.rejected += len(lines)
                    report.errors.append(LineError(refusal.line, str(case_id), str(refusal)))
                    continue
                recorded += events
                report.skipped += skipped
        report.imported += len(recorded)
        for event in recorded:
            EVENTS_RECORDED.labels(event.event_type).inc()
            log.debug("imported %s", event.event_type, extra=event_fields(event))
    log.info(
        "history import: %d imported, %d skipped, %d rejected",
        report.imported, report.skipped, report.rejected,
    )
    return report


async def _import_case(conn: asyncpg.Connection, lines: list[_Line], now) -> tuple[list[Envelope], int]:
    """One case in a savepoint (all of it or nothing)."""
    try:
        async with conn.transaction():
            return await _apply_case(conn, lines, now)
    except asyncpg.UniqueViolationError:
        # A concurrent import stored some of these events first: again, skipping them.
        async with conn.transaction():
            return await _apply_case(conn, lines, now)


async def _apply_case(conn: asyncpg.Connection, lines: list[_Line], now) -> tuple[list[Envelope], int]:
    case = await repository.lock_case(conn, lines[0].event.case_id)
    stored = await repository.stored_envelopes(conn, [l.event.event_id for l in lines])
    new, skipped = [], 0
    for line in lines:
        prior = stored.get(line.event.event_id)
        if prior is None:
            new.append(line)
        elif _content(ANY_EVENT.validate_python(prior)) == _content(line.event):
            skipped += 1
        else:
            raise _CaseRefused(line.number, f"event {line.event.event_id} is stored already with other content")
    # Case events in the order they were received; forwarding records after them, as
    # they need the case and change nothing in it.
    new.sort(key=lambda l: (l.event.event_type == FORWARDED, l.event.received_at, l.number))
    events = []
    for line in new:
        event = line.event.model_copy(update={"recorded_at": now})
        try:
            case = next_case(case, event)
        except Refused as refusal:
            raise _CaseRefused(line.number, f"{event.event_type}: {refusal}") from None
        await repository.append(conn, event, case, imported=True)
        events.append(event)
    return events, skipped


def _validate(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise ValueError("a line is one JSON object: an event in the SPEC §3 format")
    event_type = obj.get("event_type")
    if event_type not in IMPORTABLE:
        raise ValueError(
            f"event_type {event_type!r} is not imported: history carries case events"
            " and notification.forwarded records"
        )
    # recorded_at is the platform's: it becomes the time of the import.
    return ANY_EVENT.validate_python(obj | {"recorded_at": obj.get("received_at")})


def _content(event: Envelope) -> str:
    """What must match for a stored event to be the same event (not when it was recorded,
    nor the sequence intake gave it)."""
    return json.dumps(event.model_dump(mode="json", exclude={"recorded_at", "sequence"}), sort_keys=True)


def _case_id_of(obj: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(obj["case_id"]))  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def _explain(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in error.errors()[:5]
        )
    return str(error)


def _chunks(items: list, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
