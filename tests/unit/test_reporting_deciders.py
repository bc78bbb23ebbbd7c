"""Reporting's three deciders (services/reporting/domain.py), in memory: table-driven cases
of each rule, and hypothesis histories folded the three ways the platform folds them —
live one event per batch, live in batches (shared/decider.py `fold`, as shared/process.py
runs it), and `sir report rebuild` (commands.Projection) — which must give the same
tables and versions, also when the topics deliver out of order and twice."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable

import pytest
from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import handlers, repository
from services.reporting.commands import PROCESSES, Projection
from services.reporting.domain import (
    NO_DEADLINES,
    NO_FORWARDS,
    CaseRows,
    apply_case_event,
    decide_case,
    decide_deadline,
    decide_forward,
    next_status,
)
from shared.decider import Context, fold
from shared.events import ANY_EVENT, CASE_EVENT_MODELS
from shared.lifecycle import Case, Refused, State, apply
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, IMPORTED_HEADER, ROUTING_EVENTS
from shared.ordering import Position, arrive
from tests.factories import envelope_json, event_data, mappa_notification, notification, review

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
LIVE, IMPORTED = Context(NOW), Context(NOW, imported=True)


CASE = uuid.UUID(int=1)


def event(event_type: str, data: dict, *, case_id=CASE, at="2025-03-03T10:00:00+00:00",
          sequence=None, case_after=None):
    return ANY_EVENT.validate_python(
        envelope_json(event_type, case_id, dt.datetime.fromisoformat(at), data, sequence, case_after)
    )


# --- table-driven: each rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "event_type", "expected"),
    [
        (None, "deadline.opened", "open"),
        ("open", "deadline.warning", "warning"),
        ("warning", "deadline.breached", "breached"),
        ("breached", "deadline.warning", "breached"),
        ("breached", "deadline.met", "met"),
        ("met", "deadline.cancelled", "met"),
        ("cancelled", "deadline.opened", "cancelled"),
        (None, "deadline.breached", "breached"),
    ],
)
def test_a_deadline_status_never_gives_way_to_an_earlier_one(current, event_type, expected):
    assert next_status(current, event_type) == expected


NOTIFIED = ("incident.notified", notification(incident_date="2025-03-01"))
MAPPA_NOTIFIED = ("incident.notified", mappa_notification(incident_date="2025-03-01",
                                                          supervising_local_authority="inverclyde"))


@pytest.mark.parametrize(
    ("steps", "state", "closed"),
    [
        ([NOTIFIED], "notified", None),
        ([NOTIFIED, ("review.submitted", review())], "under_review", None),
        ([NOTIFIED, ("review.submitted", review()), ("review.additional_info_requested", {})],
         "awaiting_information", None),
        ([NOTIFIED, ("review.submitted", review()), ("review.responded", {"outcome": "comprehensive_review_required"})],
         "awaiting_review", None),
        ([NOTIFIED, ("review.submitted", review()), ("review.responded", {"outcome": "concluded"})], "concluded", None),
        ([NOTIFIED, ("notification.criteria_assessed", {"meets_criteria": False})], "closed", "criteria_not_met"),
        ([NOTIFIED, ("notification.criteria_assessed", {"meets_criteria": True})], "notified", None),
        ([MAPPA_NOTIFIED, ("sog.decision_recorded", {"scr_under_mappa": True})], "closed", "superseded_by_mappa_scr"),
        ([MAPPA_NOTIFIED, ("sog.decision_recorded", {"scr_under_mappa": False})], "notified", None),
        ([NOTIFIED, ("case.closed", {"reason": "withdrawn"})], "closed", "withdrawn"),
    ],
)
def test_a_case_row_holds_its_lifecycle_and_its_closing_once(steps, state, closed):
    case = None
    for number, (event_type, data) in enumerate(steps, start=1):
        at = f"2025-03-{2 + number:02d}T10:00:00+00:00"
        case = decide_case(case, event(event_type, data, at=at, sequence=number), LIVE).state
    assert case.case.state == state
    assert case.notification.closed_reason == closed == case.case.closed_reason
    assert (case.notification.closed_on is None) == (closed is None)
    if closed:  # on the day of the event that closed it
        assert case.notification.closed_on == dt.date(2025, 3, 2 + len(steps))


def test_the_decision_carried_by_the_event_is_read_not_worked_out_again():
    # A region that the reference data would not give: the event's word is taken.
    carried = {"state": "notified", "sog_region": "lothian-and-borders", "responded": False}
    case = decide_case(None, event(*MAPPA_NOTIFIED, sequence=1, case_after=carried), LIVE).state
    assert case.case == Case("glasgow-city", State.NOTIFIED, "lothian-and-borders")
    # Without it (an event recorded before envelopes carried it): the state machine, as intake ran it.
    worked_out = decide_case(None, event(*MAPPA_NOTIFIED, sequence=1), LIVE).state
    assert worked_out.case.sog_region == "north-strathclyde"
    closed = {"state": "closed", "sog_region": "lothian-and-borders", "closed_reason": "withdrawn"}
    after = decide_case(case, event("case.closed", {"reason": "withdrawn"}, sequence=2, case_after=closed,
                                    at="2025-03-09T10:00:00+00:00"), LIVE).state
    assert after.case.state is State.CLOSED and after.notification.closed_on == dt.date(2025, 3, 9)


def test_an_event_that_does_not_fit_leaves_the_lifecycle_as_it_was():
    case = decide_case(None, event(*NOTIFIED, sequence=1), LIVE).state
    logger, records = logging.getLogger("services.reporting.domain"), []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    # Other tests configure logging; this one reads the decider's logger directly.
    disabled, level = logger.disabled, logger.level
    logger.addHandler(handler)
    logger.disabled, logger.level = False, logging.WARNING
    try:
        after = decide_case(case, event("review.responded", {"outcome": "concluded"}, sequence=2), LIVE).state
    finally:
        logger.removeHandler(handler)
        logger.disabled, logger.level = disabled, level
    assert after.case == case.case and after.notification == case.notification
    assert any("does not fit" in record.getMessage() for record in records)


def test_imported_marks_the_case_for_good_and_nothing_before_a_notification_counts():
    assert decide_case(None, event(*NOTIFIED), IMPORTED).state.imported is True
    assert decide_case(None, event(*NOTIFIED), LIVE).state.imported is False
    assert decide_case(None, event("case.closed", {"reason": "withdrawn"}), LIVE).state is None


def test_a_change_of_lifecycle_alone_keeps_no_version_but_a_report_change_does():
    case = decide_case(None, event(*NOTIFIED, sequence=1), LIVE).state
    submitted = decide_case(case, event("review.submitted", review(), sequence=2, at="2025-03-04T10:00:00+00:00"),
                            LIVE).state
    assert submitted.case.state is State.UNDER_REVIEW and submitted.replaced == ()
    closed = decide_case(submitted, event("case.closed", {"reason": "withdrawn"}, sequence=3,
                                          at="2025-03-05T10:00:00+00:00"), LIVE).state
    [(table, row, until)] = closed.replaced
    assert table == "notifications" and row == case.notification and until == closed.notification.recorded_from


def test_the_first_forward_counts_and_the_later_one_is_no_change():
    def forwarded(day: int):
        at = f"2025-03-0{day}T10:00:00+00:00"
        return event("notification.forwarded", {"recipient": "scottish-government", "channel": "topic",
                                                 "attempts": 1, "delivered_at": at}, at=at)

    early, late = forwarded(3), forwarded(5)
    one = decide_forward(decide_forward(NO_FORWARDS, late, LIVE).state, early, LIVE).state
    other = decide_forward(NO_FORWARDS, early, LIVE).state
    assert decide_forward(other, late, LIVE).state is other
    assert one.rows == other.rows and len(one.replaced) == 1


def test_a_deadline_keeps_its_times_status_and_days_late():
    data = {"rule": "sg_forward", "started_at": "2025-03-03T10:00:00+00:00", "due_at": "2025-03-05T10:00:00+00:00"}
    state = NO_DEADLINES
    for kind, extra in (("opened", {}), ("breached", {"breached_at": data["due_at"]}), ("warning", {}),
                        ("met", {"met_at": "2025-03-06T10:00:00+00:00", "working_days_late": 1})):
        state = decide_deadline(state, event(f"deadline.{kind}", data | extra, at="2025-03-06T10:00:00+00:00"),
                                LIVE).state
    [row] = state.rows.values()
    assert (row.status, row.working_days_late) == ("met", 1)
    assert row.breached_at is not None and row.met_at is not None and row.cancelled_at is None


# --- any history, folded three ways -------------------------------------------------------------


@st.composite
def case_history(draw, index: int) -> list[dict]:
    """One case: a run of case events the lifecycle accepts, numbered as intake numbers
    them (carrying intake's decision, or not: older events), with forwards and a deadline."""
    case_id = uuid.UUID(int=draw(st.integers(0, 2**64)) << 8 | index)
    received = dt.datetime(2025, 1, 6, 10, tzinfo=dt.timezone.utc) + dt.timedelta(days=7 * index)
    carried = draw(st.booleans())
    events: list[dict] = []
    case = None
    for _ in range(draw(st.integers(1, 8))):
        fitting = []
        for event_type in CASE_EVENT_MODELS:
            data = event_data(draw, event_type, received)
            try:
                fitting.append((event_type, data, apply(case, event_type, "glasgow-city", data)))
            except Refused:
                pass
        if not fitting:
            break
        event_type, data, case = draw(st.sampled_from(fitting))
        after = {"state": case.state.value, "sog_region": case.sog_region, "responded": case.responded,
                 "closed_reason": case.closed_reason} if carried else None
        events.append(envelope_json(event_type, case_id, received, data, len(events) + 1, after))
        received += dt.timedelta(days=draw(st.integers(0, 40)), hours=draw(st.integers(0, 8)))
    notified = dt.datetime.fromisoformat(events[0]["received_at"])
    for attempt in range(draw(st.integers(0, 2))):
        delivered = notified + dt.timedelta(days=draw(st.integers(0, 5)))
        events.append(envelope_json("notification.forwarded", case_id, delivered, {
            "recipient": "scottish-government", "channel": "topic", "attempts": attempt + 1,
            "delivered_at": delivered.isoformat(),
        }))
    if draw(st.booleans()):
        deadline = {"rule": "review_submission", "started_at": notified.isoformat(),
                    "due_at": (notified + dt.timedelta(days=90)).isoformat()}
        ending = draw(st.sampled_from([None, "met", "breached", "breached+met", "cancelled"]))
        for kind in ["opened", *(["warning"] if draw(st.booleans()) else []), *(ending.split("+") if ending else [])]:
            moment = notified + dt.timedelta(days={"opened": 0, "warning": 89, "breached": 90}.get(kind, 95))
            extra = {"met": {"met_at": moment.isoformat(), "working_days_late": 3},
                     "breached": {"breached_at": deadline["due_at"]}}.get(kind, {})
            events.append(envelope_json(f"deadline.{kind}", case_id, moment, deadline | extra))
    return events


histories = st.integers(1, 3).flatmap(lambda n: st.tuples(*(case_history(i) for i in range(n))))


def _topic(body: dict) -> str:
    if body["event_type"].startswith("deadline."):
        return DEADLINE_EVENTS
    return ROUTING_EVENTS if body["event_type"].startswith("notification.forward") else CASE_EVENTS


def _record(body: dict, offset: int, imported: bool) -> ConsumerRecord:
    value = json.dumps(body).encode()
    return ConsumerRecord(
        topic=_topic(body), partition=0, offset=offset, timestamp=0, timestamp_type=0, key=body["case_id"].encode(),
        value=value, checksum=None, serialized_key_size=36, serialized_value_size=len(value),
        headers=((IMPORTED_HEADER, b"true"),) if imported else (),
    )


@dataclasses.dataclass
class Store:
    """What the live consumers' loaders and savers keep, in memory: each topic's states
    (with the replaced versions moved out at each save), and the versions."""

    states: dict[str, dict[uuid.UUID, object]] = dataclasses.field(
        default_factory=lambda: {t: {} for t in (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS)})
    versions: dict[str, list] = dataclasses.field(default_factory=lambda: {t: [] for t in repository.PROJECTIONS})
    seen: set = dataclasses.field(default_factory=set)
    positions: dict[uuid.UUID, Position] = dataclasses.field(default_factory=dict)

    def apply_batch(self, records: list[ConsumerRecord]) -> None:
        """One batch as shared/consumer.py and shared/process.py apply it: duplicates
        skipped, a case's events in sequence order, loaded, folded, saved."""
        by_topic: dict[str, list] = {}
        for record in records:
            body = ANY_EVENT.validate_json(record.value)
            if (record.topic, body.event_id) in self.seen:
                continue
            self.seen.add((record.topic, body.event_id))
            ready = [body]
            if record.topic == CASE_EVENTS:
                self.positions[body.case_id], ready = arrive(
                    self.positions.get(body.case_id, Position()), body.sequence, body)
            imported = dict(record.headers).get(IMPORTED_HEADER) == b"true"
            by_topic.setdefault(record.topic, []).extend((e, imported) for e in ready)
        for topic, arrivals in by_topic.items():
            process, empty = PROCESSES[topic]
            wanted = [(e, LIVE if not imported else IMPORTED) for e, imported in arrivals if process.wants(e)]
            stored = self.states[topic]
            loaded = {e.case_id: stored.get(e.case_id, empty) for e, _ in wanted}
            folded = fold(process.decide, loaded, wanted)
            for case_id in folded.changed:
                self._save(topic, case_id, folded.states[case_id])

    def _save(self, topic: str, case_id: uuid.UUID, state) -> None:
        if topic == CASE_EVENTS:
            for table, row, until in state.replaced:
                self.versions[table].append((row, until))
        else:
            self.versions["forwards" if topic == ROUTING_EVENTS else "deadlines"] += state.replaced
        self.states[topic][case_id] = dataclasses.replace(state, replaced=())

    def tables(self) -> dict[str, list]:
        projection = Projection()
        projection.states = self.states
        return _sorted(projection.tables()) | {f"{t}_versions": _versions(v) for t, v in self.versions.items()}


def _sorted(tables: dict[str, list]) -> dict[str, list]:
    return {table: sorted(rows, key=repr) for table, rows in tables.items()}


def _versions(replaced: list) -> list:
    return sorted(((*repository.values(row), until) for row, until in replaced), key=repr)


def _rebuilt(records: list[ConsumerRecord]) -> dict[str, list]:
    projection = Projection()
    for record in records:
        projection.add(record)
    assert projection.skipped == 0
    return _sorted(projection.tables()) | {f"{t}_versions": _versions(v) for t, v in projection.versions().items()}


def _live(records: list[ConsumerRecord], sizes: Callable[[], int]) -> dict[str, list]:
    store, start = Store(), 0
    while start < len(records):
        size = sizes()
        store.apply_batch(records[start:start + size])
        start += size
    return store.tables()


# Deadline and forward events have no sequence: their versions depend on the delivery
# order (the rows do not), as they did before.
ORDERED = ("notifications", "reviews", "forwards", "deadlines", "notifications_versions", "reviews_versions")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories=histories, imported=st.booleans(), rand=st.randoms(use_true_random=False),
       batch=st.integers(1, 7))
def test_one_by_one_in_batches_and_rebuilt_the_tables_are_the_same(histories, imported, rand, batch):
    in_order = [body for history in histories for body in history]
    records = [_record(body, offset, imported) for offset, body in enumerate(in_order)]

    one_by_one = _live(records, lambda: 1)
    assert _live(records, lambda: batch) == one_by_one
    assert _rebuilt(records) == one_by_one

    # Any order, some events twice (a replay): shared/ordering puts each case's events back
    # in sequence, and duplicates are skipped.
    delivered = records + rand.sample(records, k=rand.randint(0, len(records)))
    rand.shuffle(delivered)
    shuffled = _live(delivered, lambda: rand.randint(1, 7))
    rebuilt = _rebuilt(delivered)
    assert {t: shuffled[t] for t in ORDERED} == {t: one_by_one[t] for t in ORDERED}
    assert {t: rebuilt[t] for t in ORDERED} == {t: one_by_one[t] for t in ORDERED}

    # Every notified case is in the case table with its lifecycle, as the last event left it.
    cases = {row[0]: row for row in one_by_one["notifications"]}
    state_at = len(repository.table_columns("notifications")) - 4
    for history in histories:
        last = [b for b in history if _topic(b) == CASE_EVENTS][-1]
        assert cases[uuid.UUID(last["case_id"])][state_at] == _lifecycle(history).state.value
        assert cases[uuid.UUID(last["case_id"])][-1] is imported


def _lifecycle(history: list[dict]) -> Case:
    case = None
    for body in history:
        if _topic(body) == CASE_EVENTS:
            case = apply(case, body["event_type"], body["local_authority"], body["data"])
    assert case is not None
    return case


def test_the_consumers_are_the_deciders_the_rebuild_folds():
    assert PROCESSES[CASE_EVENTS][0] is handlers.CASES and handlers.CASES.decide is decide_case
    assert handlers.FORWARDS.decide is decide_forward and handlers.DEADLINES.decide is decide_deadline
    assert PROCESSES[ROUTING_EVENTS][1] is NO_FORWARDS and PROCESSES[DEADLINE_EVENTS][1] is NO_DEADLINES


def test_apply_case_event_is_the_case_decider_without_the_versions():
    first = event(*NOTIFIED, sequence=1)
    assert isinstance(apply_case_event(None, first), CaseRows)
    assert apply_case_event(None, first).notification == decide_case(None, first, LIVE).state.notification


def test_make_and_same_are_the_dataclass_constructor_and_equality():
    """The deciders build rows with `make` and compare them with `same` (the rebuild folds
    a million events): the same rows as the dataclass's own __init__ and ==."""
    from services.reporting.domain import Deadline, Forward, make, replace, same

    at = dt.datetime(2024, 1, 2, 10, tzinfo=dt.timezone.utc)
    case_id = uuid.uuid4()
    made = make(Deadline, case_id=case_id, rule="notification", started_at=at, local_authority="fife", due_at=at)
    built = Deadline(case_id, "notification", at, "fife", at)
    assert made == built and vars(made) == vars(built) and same(made, built)
    assert not same(replace(made, status="open"), built) and not same(made, None) and same(None, None)
    forward = make(Forward, case_id=case_id, recipient="scottish-government", local_authority="fife",
                   delivered_at=at, delivered_on=at.date())
    assert forward == Forward(case_id, "scottish-government", "fife", at, at.date()) and forward.recorded_from is None
    assert not same(forward, made)
