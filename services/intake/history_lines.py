"""Reading one line of imported history (pass 1 of services/intake/history.py): parse it,
validate it as a live event is validated, and give back the event as JSON, or why the line
is refused. No memory of other lines (the Validator in history.py keeps that), so the
lines may be read in other processes: this module loads only the event models, so that a
checker process of `sir import` starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from pydantic import ValidationError

from services.intake.domain import FORWARDED
from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope

IMPORTABLE = frozenset(CASE_EVENT_MODELS) | {FORWARDED}
# Fields of a line that intake sets itself when it stores the event.
REASSIGNED = {"sequence", "case_after"}
# A reason is about the line, never a copy of it: long values are cut.
MAX_REASON_CHARS = 300

# What PostgreSQL's jsonb cannot store, as JSON text spells it: \u0000 and a UTF-16
# surrogate escape (only a valid pair survives json.loads as one character). A number
# that is not finite (1e400, Infinity, NaN) is seen as it is parsed (`LineReader._float`):
# a pattern for exponents also matched the hex digits of most UUIDs ("e123"), so half of
# all lines were walked for nothing (issue 15).
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class Event(NamedTuple):
    """A valid line (a tuple: made for every line, and sent between processes)."""

    line: int
    case_id: bytes  # the UUID's 16 bytes
    event_id: bytes
    # The validated event as JSON without what intake gives it (sequence, case_after;
    # recorded_at is received_at here): what pass 2 reads back, and what must match for a
    # repeat, so equal to another line's exactly when `domain.event_content` is.
    content: str
    digest: bytes  # a short digest of `content`: 8 bytes an event to find repeats by


class BadLine(NamedTuple):
    """A line refused, with the reason (as the line gave it: `printable` makes it safe)."""

    line: int
    case_id: uuid.UUID | None  # when the line names one: its case is refused whole
    reason: str


class LineReader:
    """Reads lines one at a time (`read`); keeps nothing from one line to the next."""

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
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

    def read(self, number: int, raw: bytes | str | None) -> Event | BadLine | None:
        """The line numbered `number` (None: it was longer than `max_line_bytes`): its
        event, why it is refused, or None for a blank line."""
        if raw is None:
            return BadLine(number, None, f"longer than {self.max_line_bytes} bytes: one event a line")
        if not raw.strip():
            return None
        try:
            obj = self._loads(raw)
        except RecursionError:
            return BadLine(number, None, "not JSON this platform reads: nested too deeply")
        except ValueError as error:  # also bad UTF-8 and integers of thousands of digits
            return BadLine(number, None, f"not JSON: {error}")
        try:
            if self._not_finite or _SUSPECT.search(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
                _check_storable(obj)
            event = _validate(obj)
            content = event.model_dump_json(exclude=REASSIGNED)
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            return BadLine(number, _case_id_of(obj), _explain(error))
        except Exception as error:
            return BadLine(number, _case_id_of(obj), f"cannot be read: {type(error).__name__}")
        digest = hashlib.blake2b(content.encode(), digest_size=8).digest()
        return Event(number, event.case_id.bytes, event.event_id.bytes, content, digest)


# Each checker process's reader (`read_lines`), made at its first batch.
_readers: dict[int, LineReader] = {}


def read_lines(batch: Sequence[tuple[int, bytes | None]], max_line_bytes: int) -> list[Event | BadLine | None]:
    """`LineReader.read` of each (number, line) of `batch`: what a checker process does
    with a batch (a function of this module, so that it starts with this module only)."""
    reader = _readers.get(max_line_bytes)
    if reader is None:
        reader = _readers[max_line_bytes] = LineReader(max_line_bytes)
    return [reader.read(number, raw) for number, raw in batch]


def _validate(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise ValueError("a line is one JSON object: an event in the SPEC §3 format")
    event_type = obj.get("event_type")
    if not isinstance(event_type, str) or event_type not in IMPORTABLE:
        raise ValueError(
            f"event_type {printable(repr(event_type))[:80]} is not imported: history carries case events"
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
            raise ValueError(f"{printable(path)}: contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{printable(path)}: contains a lone surrogate (not a Unicode character)") from None
    elif isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise ValueError(f"{printable(path)}: not a finite number")


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


def printable(text: str) -> str:
    """The reason as safe text: control characters and lone surrogates escaped, and cut."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
