"""Structured logs: one JSON object per line, with the event and case a line is about.

Correlation: a line carries `event_id`, `case_id` (and `event_type`, `local_authority`)
when the call passes them with `extra=event_fields(event)`, or when it runs inside
`event_context(...)` (the consumers set it around each event). Never pass an event's
`data` or a request body: the SPEC allows no personal data in logs, and the free-text
fields (council_reference, incident_type_detail, note, reason) stay out of them.

`SIR_LOG_FORMAT=text` gives the classic one-line text format for reading by eye.

Quiet under outage: while the broker or the database is away, aiokafka and the
platform's retry loops would write the same warning once per attempt (thousands of
lines a minute). `RepeatFilter` lets the first of a kind through, counts the repeats
for `SIR_LOG_REPEAT_SECONDS`, then writes one line saying how many there were.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Set around the handling of one event, so every line logged meanwhile names it.
# No default (a shared dict would be one for every context): readers pass a fresh empty one.
_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("sir_log_context")

# Attributes every LogRecord has; anything else on a record came through `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def event_fields(event: Any) -> dict[str, str]:
    """The fields that say which event a line is about (for `extra=`): never its data."""
    return {
        "event_id": str(event.event_id),
        "case_id": str(event.case_id),
        "event_type": event.event_type,
        "local_authority": event.local_authority,
    }


@contextlib.contextmanager
def event_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside names these fields (event_id, case_id …)."""
    token = _CONTEXT.set(_CONTEXT.get({}) | {k: str(v) for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, service, then the context's and the call's extra fields."""

    def __init__(self, service: str | None = None):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            line["service"] = self.service
        line.update(_CONTEXT.get({}))
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


# Plain numbers in a message (a backoff, an attempt, a count), not parts of an id.
_FIGURES = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?:ms|s)?(?![\w-])")


@dataclass
class _Repeats:
    since: float  # when the line that opened this window was written
    count: int = 0  # lines like it held back since
    last: logging.LogRecord | None = None


class RepeatFilter(logging.Filter):
    """Collapses repeated warnings and errors: one line per kind and interval, with a count.

    Two records are of a kind when they come from the same logger at the same level with
    the same message once its plain numbers are set aside, and the same event context: so
    "retrying in 1.2s" and "retrying in 2.4s" are one kind, while lines naming different
    events, deliveries or hosts (ids with letters) stay apart. The first
    record of a kind passes; the next ones within `interval` seconds are held back and
    counted. When the interval has passed, the next record through the handler (of any
    kind) brings out one summary per kind held back: its last message, then
    "(repeated N times in the last S s)". INFO and DEBUG lines always pass.
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[logging.LogRecord], object] | None = None,
    ):
        super().__init__()
        self.interval = interval
        self.clock = clock
        # Where summaries go: the handler this filter is on (set by configure_logging).
        self.emit = emit
        self._kinds: dict[tuple, _Repeats] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_sir_summary", False):
            return True
        now = self.clock()
        summaries = self._expired(now)
        passes = True
        if record.levelno >= logging.WARNING and self.interval > 0:
            key = (record.name, record.levelno, _FIGURES.sub("#", record.getMessage()),
                   tuple(sorted(_CONTEXT.get({}).items())))
            with self._lock:
                repeats = self._kinds.get(key)
                if repeats is None:
                    self._kinds[key] = _Repeats(since=now)
                else:
                    repeats.count += 1
                    repeats.last = record
                    passes = False
        for summary in summaries:
            if self.emit is not None:
                self.emit(summary)
        return passes

    def flush(self) -> None:
        """Write the summaries of every kind held back now (at exit, in tests)."""
        for summary in self._expired(float("inf")):
            if self.emit is not None:
                self.emit(summary)

    def _expired(self, now: float) -> list[logging.LogRecord]:
        summaries = []
        with self._lock:
            for key in [k for k, r in self._kinds.items() if now - r.since >= self.interval]:
                repeats = self._kinds.pop(key)
                if repeats.count and repeats.last is not None:
                    summaries.append(self._summary(repeats.last, repeats.count, min(now, self.clock()) - repeats.since))
        return summaries

    @staticmethod
    def _summary(last: logging.LogRecord, count: int, seconds: float) -> logging.LogRecord:
        summary = logging.makeLogRecord(vars(last))
        summary.msg = "%s (repeated %d time%s in the last %.0f s)"
        summary.args = (last.getMessage(), count, "" if count == 1 else "s", seconds)
        summary.exc_info = summary.exc_text = None  # the first line of the kind had the traceback
        summary._sir_summary = True
        return summary


def close_logging() -> None:
    """Write what our handler still holds back (its repeat counts) and take it off the
    root logger; a test run calls this before its summary, so the summary stays last."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        repeats = getattr(old, "repeats", None)
        if repeats is not None:
            atexit.unregister(repeats.flush)
            repeats.flush()
        root.removeHandler(old)


def configure_logging(
    level: str = "INFO", log_format: str = "json", service: str | None = None, repeat_seconds: float = 60.0
) -> None:
    """One handler on the root logger, to stderr, in JSON (default) or text, collapsing
    repeated warnings (RepeatFilter) over `repeat_seconds` (0: every line)."""
    if log_format not in ("json", "text"):
        raise ValueError(f"SIR_LOG_FORMAT is json or text, not {log_format!r}")
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    repeats = RepeatFilter(repeat_seconds, emit=handler.handle)
    handler.addFilter(repeats)
    handler.repeats = repeats
    # Replace only our own handler (configured twice in one process, as in tests), and
    # leave others' (pytest's capture) in place.
    close_logging()
    atexit.register(repeats.flush)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # FastStream's own logger prints coloured text through its own handler; send its
    # lines through ours instead.
    faststream = logging.getLogger("faststream")
    for old in list(faststream.handlers):
        faststream.removeHandler(old)
    faststream.propagate = True


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, whatever replaced it since (as logging's lastResort)."""

    repeats: RepeatFilter | None = None  # its filter, flushed when the handler is replaced

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
