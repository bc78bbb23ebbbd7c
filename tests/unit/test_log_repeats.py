"""Repeated warnings collapse into one line per interval with a count (shared/logs.RepeatFilter)."""

from __future__ import annotations

import logging

from shared.logs import RepeatFilter, event_context


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _filtered(name="aiokafka", level=logging.ERROR, msg="Unable connect to node %s: %s", args=(1, "refused")):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def _setup(interval=60.0):
    clock, written = _Clock(), []

    def handle(record):
        written.append(record.getMessage())

    repeats = RepeatFilter(interval, clock=clock, emit=handle)

    def log(record):
        if repeats.filter(record):
            handle(record)

    return clock, repeats, log, written


def test_a_repeated_error_is_written_once_then_once_with_its_count():
    clock, _, log, written = _setup()
    for _ in range(5000):
        log(_filtered())
        clock.now += 0.01  # 50 s in all
    assert written == ["Unable connect to node 1: refused"]
    clock.now += 11
    log(_filtered())
    assert written == [
        "Unable connect to node 1: refused",
        "Unable connect to node 1: refused (repeated 4999 times in the last 61 s)",
        "Unable connect to node 1: refused",
    ]


def test_lines_that_differ_only_in_their_figures_are_one_kind():
    clock, _, log, written = _setup()
    for backoff in (0.5, 1.0, 2.0, 4.0):
        log(_filtered("shared.outbox", logging.WARNING, "outbox relay %s: %s; retrying in %.1fs", ("intake", "away", backoff)))
    assert written == ["outbox relay intake: away; retrying in 0.5s"]
    clock.now += 60
    log(_filtered("shared.outbox", logging.INFO, "published %d", (3,)))
    assert written[1:] == ["outbox relay intake: away; retrying in 4.0s (repeated 3 times in the last 60 s)", "published 3"]


def test_other_loggers_levels_and_events_are_other_kinds_and_info_always_passes():
    _, _, log, written = _setup()
    log(_filtered("aiokafka"))
    log(_filtered("aiokafka.conn"))
    log(_filtered("aiokafka", logging.WARNING))
    with event_context(event_id="e1"):
        log(_filtered())
    with event_context(event_id="e2"):
        log(_filtered())
    for _ in range(3):
        log(_filtered(level=logging.INFO, msg="accepted %s", args=("x",)))
    assert len(written) == 8


def test_held_back_lines_are_counted_at_exit_and_an_interval_of_zero_writes_all():
    _, repeats, log, written = _setup()
    log(_filtered())
    log(_filtered())
    repeats.flush()
    assert written[-1].endswith("(repeated 1 time in the last 0 s)")

    _, _, log, written = _setup(interval=0)
    for _ in range(3):
        log(_filtered())
    assert len(written) == 3


def test_lines_about_different_deliveries_stay_apart():
    _, _, log, written = _setup()
    for delivery in ("415b6547-ec7f-4685", "9c0d2e11-aa01-4b7e"):
        for attempt in (1, 2):
            log(_filtered("services.routing.delivery", logging.WARNING, "delivery %s: attempt %d failed", (delivery, attempt)))
    assert written == ["delivery 415b6547-ec7f-4685: attempt 1 failed", "delivery 9c0d2e11-aa01-4b7e: attempt 1 failed"]
