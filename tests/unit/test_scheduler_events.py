"""The scheduler writes its warnings and breaches as JSON directly (issue 15: building a
thousand Envelope models per round was most of its time). What it writes must be byte for
byte what the models give (`deadline_event(...).model_dump_json()`), with the same
CloudEvents headers, for any fired row."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from services.deadlines.domain import RULE_NAMES, deadline_event, event_id
from services.deadlines.scheduler import serialise_fired
from shared.events import Envelope
from shared.messaging import cloudevent_headers
from shared.reference import LOCAL_AUTHORITY_SLUGS

UTC = dt.timezone.utc
moments = st.datetimes(
    min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)).map(
    lambda m: m.replace(microsecond=0)  # pydantic leaves out a zero fraction, as isoformat does
)


@st.composite
def fired_rows(draw) -> dict:
    due = draw(moments)
    breached = draw(st.booleans())
    return {
        "case_id": draw(st.uuids()),
        "rule": draw(st.sampled_from(RULE_NAMES)),
        "sequence": draw(st.integers(1, 2**31 - 1)),
        "local_authority": draw(st.sampled_from(LOCAL_AUTHORITY_SLUGS)),
        "status": "breached" if breached else "open",
        "started_at": draw(moments),
        "due_at": due,
        "warn_at": None if breached and draw(st.booleans()) else draw(moments),
        "imported": draw(st.booleans()),
    }


def _model(row: dict, recorded_at: dt.datetime) -> Envelope:
    """What the scheduler fired before it wrote JSON itself (services/deadlines/scheduler.py, 14e6698)."""
    breached = row["status"] == "breached"
    return deadline_event(
        "breached" if breached else "warning", row,
        received_at=row["due_at"] if breached else row["warn_at"], recorded_at=recorded_at,
        breached_at=row["due_at"] if breached else None,
        causation_id=event_id(row["case_id"], row["rule"], row["sequence"], "opened"),
    )


@settings(deadline=None)  # no timed assertion: a loaded machine takes its time
@given(rows=st.lists(fired_rows(), min_size=1, max_size=5), recorded_at=moments)
def test_the_scheduler_writes_what_the_models_would(rows, recorded_at):
    ids, types, keys, values, headers = serialise_fired(rows, recorded_at)
    for row, event_id_, event_type, key, value, header in zip(rows, ids, types, keys, values, headers, strict=True):
        model = _model(row, recorded_at)
        assert value == model.model_dump_json().encode()
        assert uuid.UUID(event_id_) == model.event_id and event_type == model.event_type
        assert key == str(model.case_id).encode()
        assert json.loads(header) == cloudevent_headers(model, "deadlines", row["imported"])


def test_a_fraction_of_a_second_and_none():
    due = dt.datetime(2026, 3, 1, 12, 0, 0, 120, tzinfo=UTC)
    row = {
        "case_id": uuid.uuid4(), "rule": RULE_NAMES[0], "sequence": 1, "local_authority": "fife",
        "status": "open", "started_at": due - dt.timedelta(days=28), "due_at": due,
        "warn_at": due.replace(microsecond=0) - dt.timedelta(days=7), "imported": False,
    }
    recorded = due.replace(microsecond=0)
    (value,) = serialise_fired([row], recorded)[3]
    assert value == _model(row, recorded).model_dump_json().encode()
    assert b'"received_at":"2026-02-22T12:00:00Z"' in value and b'"due_at":"2026-03-01T12:00:00.000120Z"' in value
