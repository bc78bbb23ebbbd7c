"""Validating a history file (pass 1): line numbers, reasons, refused cases (no database)."""

import asyncio
import json
import uuid
from types import SimpleNamespace

import pytest

from services.intake.history import Validator, _lines
from tests.factories import envelope, notification


def parse(lines, max_line_bytes=1_000_000):
    """Pass 1 over `lines`: the spooled lines grouped by case, and the validator."""
    validator = Validator(max_line_bytes)
    cases = {}
    for number, raw in enumerate(lines, start=1):
        if (spooled := validator.check(number, raw)) is not None:
            cases.setdefault(spooled.case_id, []).append(SimpleNamespace(number=spooled.line))
    return SimpleNamespace(
        cases=cases, errors=validator.errors, refused=validator.refused, repeated=validator.repeated
    )


def _line(event: dict) -> str:
    return json.dumps(event)


def test_lines_are_grouped_by_case_in_file_order():
    first, second = uuid.uuid4(), uuid.uuid4()
    lines = [
        _line(envelope("incident.notified", notification(), case_id=first)),
        "",
        _line(envelope("incident.notified", notification(), case_id=second)),
        _line(envelope("notification.criteria_assessed", {"meets_criteria": True}, case_id=first, role="inspectorate")),
    ]
    history = parse(lines)
    assert history.errors == []
    assert list(history.cases) == [first, second]
    assert [line.number for line in history.cases[first]] == [1, 4]


def test_recorded_at_may_be_left_out_the_import_sets_it():
    event = envelope("incident.notified", notification())
    del event["recorded_at"]
    assert parse([json.dumps(event).encode()]).errors == []


def test_each_bad_line_is_reported_with_its_number_and_reason():
    refused_case = uuid.uuid4()
    bad_value = envelope("incident.notified", notification(incident_type="arson"), case_id=refused_case)
    deadline = envelope("deadline.opened", {}, role="service")
    lines = [
        "not json",
        "[1, 2]",
        _line(bad_value),
        _line(envelope("notification.criteria_assessed", {"meets_criteria": True}, case_id=refused_case)),
        _line(deadline),
    ]
    history = parse(lines)
    reasons = {e.line: e.reason for e in history.errors}
    assert reasons[1].startswith("not JSON")
    assert "one JSON object" in reasons[2]
    assert "incident_type" in reasons[3]
    assert "deadline.opened" in reasons[5] and "not imported" in reasons[5]
    assert {e.line: e.case_id for e in history.errors}[3] == str(refused_case)
    # The case of a bad line is refused whole, its good line with it.
    assert history.refused == {refused_case, uuid.UUID(deadline["case_id"])}
    assert [line.number for line in history.cases[refused_case]] == [4]


def test_a_repeated_line_is_skipped_and_a_changed_repeat_refused():
    event = envelope("incident.notified", notification())
    changed = event | {"data": notification(council_reference="OTHER")}
    history = parse([_line(event), _line(event), _line(changed)])
    assert sum(history.repeated.values()) == 1
    assert [e.line for e in history.errors] == [3] and "other content" in history.errors[0].reason
    assert history.refused == {uuid.UUID(event["case_id"])}


def test_a_forwarding_record_needs_its_case_and_an_event_its_authority():
    from services.intake.domain import next_case
    from shared.events import ANY_EVENT
    from shared.lifecycle import Refused, State

    case_id = uuid.uuid4()
    notified = ANY_EVENT.validate_python(envelope("incident.notified", notification(), case_id=case_id))
    forwarded = ANY_EVENT.validate_python(envelope(
        "notification.forwarded",
        {"recipient": "scottish-government", "channel": "email", "attempts": 1,
         "delivered_at": "2024-03-06T09:00:00Z"},
        case_id=case_id, role="service",
    ))
    with pytest.raises(Refused, match="follows its case's notification"):
        next_case(None, forwarded)
    case = next_case(None, notified)
    assert case.state is State.NOTIFIED and next_case(case, forwarded) == case
    elsewhere = ANY_EVENT.validate_python(
        envelope("case.closed", {"reason": "withdrawn"}, case_id=case_id, local_authority="fife", role="inspectorate")
    )
    with pytest.raises(Refused, match="belongs to glasgow-city, not fife"):
        next_case(case, elsewhere)


def _with(event: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    target = event
    for key in parents:
        target = target[key]
    target[last] = value
    return event


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (json.dumps(_with(envelope("incident.notified", notification()), "data.council_reference", "A\x00B")),
         "data.council_reference: contains a NUL character"),
        (json.dumps(_with(envelope("incident.notified", notification()), "actor.id", "A\ud800B")),
         "actor.id: contains a lone surrogate"),
        (json.dumps(envelope("incident.notified", notification())).replace('"schema_version": 1', '"schema_version": 1e400'),
         "schema_version: not a finite number"),
        (json.dumps(_with(envelope("incident.notified", notification()), "data.mappa", {"\x00": 1})),
         "contains a NUL character"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"event_type": "incident.notified", "case_id": 7, "x": 1' + "9" * 5000 + "}", "not JSON"),
        (json.dumps(envelope("incident.notified", notification()) | {"case_id": {"a": [1]}}), "case_id"),
        (json.dumps(envelope("incident.notified", notification()) | {"data": [1, 2]}), "data"),
        (json.dumps(envelope("incident.notified", notification()) | {"event_type": {"a": [1]}}), "is not imported"),
        (b'{"event_type": "\xff"}', "not JSON"),
    ],
    ids=["nul", "surrogate", "1e400", "nul-in-key", "deep", "huge-int", "odd-case-id", "odd-data", "odd-type", "bad-utf8"],
)
def test_a_line_the_database_could_not_store_is_refused_with_its_number_and_field(line, reason):
    good = json.dumps(envelope("incident.notified", notification()))
    history = parse([good, line, good.replace("incident", "incident")])
    [error] = history.errors
    assert error.line == 2 and reason in error.reason
    assert error.reason.isprintable() and len(error.reason) <= 300


def test_lines_are_split_across_chunks_and_a_too_long_line_is_refused_unread():
    async def collect(chunks, max_line_bytes):
        return [(n, raw) async for n, raw in _lines(chunks, max_line_bytes, None)]

    chunks = [b"ab", b"c\n", b"x" * 50, b"y" * 50, b"\n\nlast"]
    assert asyncio.run(collect(chunks, 10)) == [(1, b"abc"), (2, None), (3, b""), (4, b"last")]
    assert "longer than 10 bytes" in parse([None], max_line_bytes=10).errors[0].reason
