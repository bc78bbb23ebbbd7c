"""Parsing a history file: line numbers, reasons, grouping by case (no database)."""

import json
import uuid

import pytest

from services.intake.history import parse
from tests.factories import envelope, notification


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
    assert [l.number for l in history.cases[first]] == [1, 4]


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
    assert [l.number for l in history.cases[refused_case]] == [4]


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
