"""Structured logs: one JSON object per line, with the event and case a line is about.

Correlation: a line carries `event_id`, `case_id` (and `event_type`, `local_authority`)
when the call passes them with `extra=event_fields(event)`, or when it runs inside
`event_context(...)` (the consumers set it around each event). Never pass an event's
`data` or a request body: the SPEC allows no personal data in logs, and the free-text
fields (council_reference, incident_type_detail, note, reason) stay out of them.

`SIR_LOG_FORMAT=text` gives the classic one-line text format for reading by eye.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any, Iterator

# Set around the handling of one event, so every line logged meanwhile names it.
_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("sir_log_context", default={})

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
    token = _CONTEXT.set(_CONTEXT.get() | {k: str(v) for k, v in fields.items() if v is not None})
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
        line.update(_CONTEXT.get())
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "json", service: str | None = None) -> None:
    """One handler on the root logger, to stderr, in JSON (default) or text."""
    if log_format not in ("json", "text"):
        raise ValueError(f"SIR_LOG_FORMAT is json or text, not {log_format!r}")
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    # Replace only our own handler (configured twice in one process, as in tests), and
    # leave others' (pytest's capture) in place.
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
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

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
