"""Deadlines' decider in memory (services/deadlines/domain.py `decide`): a case's
deadlines and one event → the deadlines after it and the deadline events, in order.

Table-driven cases for each rule's start, stop, early stop, settling at once, cancelling
on a closing and imported history with its hold; then properties over generated
histories of a case. The same decider runs behind the shell in service
(tests/integration/test_deadline_engine.py checks it against PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.deadlines.domain import (
    RULE_NAMES,
    RULES,
    CaseDeadlines,
    CaseRow,
    Deadline,
    event_id,
    wants,
    working_days_late,
)
from services.deadlines.domain import decide as decide_with
from shared.decider import Context, fold
from shared.events import ANY_EVENT
from tests.factories import envelope, mappa_notification, notification, review

UTC = dt.timezone.utc
SETTLE = dt.timedelta(minutes=10)
decide = partial(decide_with, settle=SETTLE)
MONDAY = dt.datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # no holidays near it
NOW = dt.datetime(2027, 6, 1, 6, 0, tzinfo=UTC)  # the transaction's time: after every deadline below
CASE = uuid.UUID("00000000-0000-4000-8000-000000000001")
ROLES = {
    "review.additional_info_requested": "inspectorate", "review.responded": "inspectorate",
    "notification.criteria_assessed": "inspectorate", "sog.decision_recorded": "sog",
    "notification.forwarded": "service",
}


def _event(event_type, data, at, *, case_id=CASE, recorded_at=None, **fields):
    body = envelope(event_type, data, case_id=case_id, role=ROLES.get(event_type, "council"))
    body["received_at"] = at.isoformat()
    body["recorded_at"] = (recorded_at or at).isoformat()
    body.update(fields)
    return ANY_EVENT.validate_python(body)


def notified(at=MONDAY, *, mappa=False, incident_date="2026-10-26", **fields):
    make = mappa_notification if mappa else notification
    return _event("incident.notified", make(incident_date=incident_date), at, **fields)


def forwarded(recipient, at):
    data = {"recipient": recipient, "channel": "topic", "attempts": 1, "delivered_at": at.isoformat()}
    return _event("notification.forwarded", data, at)


def submitted(at, review_type="initial_analysis"):
    return _event("review.submitted", review(review_type=review_type), at)


def responded(at, outcome="concluded"):
    return _event("review.responded", {"outcome": outcome}, at)


def info_requested(at):
    return _event("review.additional_info_requested", {}, at)


def info_provided(at):
    return _event("review.additional_info_provided", {}, at)


def criteria(at, meets):
    return _event("notification.criteria_assessed", {"meets_criteria": meets}, at)


def closed(at, reason="withdrawn"):
    return _event("case.closed", {"reason": reason}, at)


def day(n: int, hours: int = 0) -> dt.datetime:
    return MONDAY + dt.timedelta(days=n, hours=hours)


def run(events, *, imported=False, now=NOW, state=None):
    """Fold the events through the decider as the shell does; the final state and the
    emitted events as (event_type, rule, sequence)."""
    folded = fold(decide, {CASE: state or CaseDeadlines(CASE)}, [(e, Context(now, imported)) for e in events])
    emitted = [event for event, _ in folded.emitted]
    return folded.states[CASE], emitted


def kinds(emitted):
    return [(e.event_type.removeprefix("deadline."), e.data.rule) for e in emitted]


def statuses(state):
    return {d.key: d.status for d in state.deadlines}


# --- the table --------------------------------------------------------------------------

CASES = [
    pytest.param(
        [notified()],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("review_submission", 1): "open"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "review_submission")],
        id="notified: its deadlines open, the notification judged at once",
    ),
    pytest.param(
        [notified(mappa=True)],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("sog_forward", 1): "open",
         ("review_submission", 1): "open"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "sog_forward"), ("opened", "review_submission")],
        id="notified under MAPPA: sog_forward opens too",
    ),
    pytest.param(
        [notified(mappa=True), forwarded("scottish-government", day(0, 1)), forwarded("sog:glasgow", day(4))],
        {("notification", 1): "met", ("sg_forward", 1): "met", ("sog_forward", 1): "met",
         ("review_submission", 1): "open"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "sog_forward"), ("opened", "review_submission"), ("met", "sg_forward"), ("met", "sog_forward")],
        id="forwardings meet sg_forward and sog_forward",
    ),
    pytest.param(
        [forwarded("scottish-government", day(0, 1)), notified()],
        {("notification", 1): "met", ("sg_forward", 1): "met", ("review_submission", 1): "open"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"), ("met", "sg_forward"),
         ("opened", "review_submission")],
        id="a forwarding before its notification is kept and meets sg_forward as it opens",
    ),
    pytest.param(
        [notified(), submitted(day(1)), responded(day(2), "comprehensive_review_required"),
         submitted(day(3), "comprehensive"), responded(day(4))],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("review_submission", 1): "met",
         ("inspectorate_response", 1): "met", ("comprehensive_review", 1): "met",
         ("inspectorate_response", 2): "met"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "review_submission"),
         ("met", "review_submission"), ("opened", "inspectorate_response"),
         ("met", "inspectorate_response"), ("opened", "comprehensive_review"),
         ("met", "comprehensive_review"), ("opened", "inspectorate_response"),
         ("met", "inspectorate_response")],
        id="the review cycle: each rule starts and stops in turn (a second submission meets the comprehensive review)",
    ),
    pytest.param(
        [notified(), submitted(day(1)), info_requested(day(2)), info_provided(day(3)), info_requested(day(4))],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("review_submission", 1): "met",
         ("inspectorate_response", 1): "open", ("additional_info", 1): "met", ("additional_info", 2): "open"},
        None,
        id="a rule that starts again numbers its deadlines",
    ),
    pytest.param(
        [notified(), submitted(day(1)), closed(day(2))],
        {("notification", 1): "met", ("sg_forward", 1): "cancelled", ("review_submission", 1): "met",
         ("inspectorate_response", 1): "cancelled"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "review_submission"), ("met", "review_submission"), ("opened", "inspectorate_response"),
         ("cancelled", "sg_forward"), ("cancelled", "inspectorate_response")],
        id="closing cancels what is open, in the order it opened",
    ),
    pytest.param(
        [notified(), criteria(day(1), False)],
        {("notification", 1): "met", ("sg_forward", 1): "cancelled", ("review_submission", 1): "cancelled"},
        None,
        id="criteria not met cancels",
    ),
    pytest.param(
        [notified(), criteria(day(1), True)],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("review_submission", 1): "open"},
        None,
        id="criteria met cancels nothing",
    ),
    pytest.param(
        [notified(), forwarded("scottish-government", day(1)), forwarded("scottish-government", day(2))],
        {("notification", 1): "met", ("sg_forward", 1): "met", ("review_submission", 1): "open"},
        [("opened", "notification"), ("met", "notification"), ("opened", "sg_forward"),
         ("opened", "review_submission"), ("met", "sg_forward")],
        id="a second stop meets nothing and is not kept",
    ),
    pytest.param(
        [info_provided(day(1)), notified()],
        {("notification", 1): "met", ("sg_forward", 1): "open", ("review_submission", 1): "open"},
        None,
        id="a stop on the start's own topic is never kept for later",
    ),
]


@pytest.mark.parametrize(("events", "expected", "emitted"), CASES)
def test_the_decider_on_a_case(events, expected, emitted):
    state, out = run(events)
    assert statuses(state) == expected
    if emitted is not None:
        assert kinds(out) == emitted
    assert state.early_stops == ()


def test_a_stop_meets_with_its_own_moment_and_the_working_days_late():
    state, out = run([notified(), forwarded("scottish-government", day(4))])  # Friday: 2 working days late
    sg = next(d for d in state.deadlines if d.rule == "sg_forward")
    assert (sg.status, sg.met_at, sg.working_days_late, sg.next_fire_at) == ("met", day(4), 2, None)
    met = out[-1]
    assert met.event_type == "deadline.met" and met.received_at == day(4)
    assert met.data.met_at == day(4) and met.data.working_days_late == 2


def test_a_breached_deadline_is_still_met_by_its_stop():
    state, _ = run([notified()])
    breached = CaseDeadlines(CASE, state.case, tuple(
        Deadline(**{**d.__dict__, "status": "breached", "next_fire_at": None}) if d.rule == "sg_forward" else d
        for d in state.deadlines
    ))
    after, out = run([forwarded("scottish-government", day(7))], state=breached)
    assert statuses(after)["sg_forward", 1] == "met"
    assert kinds(out) == [("met", "sg_forward")]
    # a closing cancels open deadlines only: a breached one stays breached
    after, out = run([closed(day(1))], state=breached)
    assert statuses(after)["sg_forward", 1] == "breached" and ("cancelled", "sg_forward") not in kinds(out)


def test_the_notification_is_judged_at_once_with_its_lateness():
    state, _ = run([notified(incident_date="2026-10-19")])  # day 5 was Mon 26 Oct: 5 working days late
    notification_deadline = next(d for d in state.deadlines if d.rule == "notification")
    assert notification_deadline.working_days_late == 5 == working_days_late(
        "notification", notification_deadline.started_at, MONDAY
    )
    assert not notification_deadline.watched and notification_deadline.next_fire_at is None


def test_the_events_are_the_deadline_events_of_the_shell():
    event = notified()
    _, out = run([event])
    assert all(e.recorded_at == NOW and e.causation_id == event.event_id for e in out)
    assert [e.event_id for e in out[:2]] == [
        event_id(CASE, "notification", 1, "opened"), event_id(CASE, "notification", 1, "met"),
    ]
    assert out[0].received_at == dt.datetime(2026, 10, 26, tzinfo=dt.timezone.utc)  # the incident date, start of day


def test_a_live_deadline_is_watched_from_its_warning():
    state, _ = run([notified()])
    sg = next(d for d in state.deadlines if d.rule == "sg_forward")
    assert sg.watched and not sg.imported and sg.next_fire_at == sg.warn_at


def test_the_sog_region_is_intakes_decision_carried_by_the_event():
    carried = {"state": "notified", "sog_region": "north-of-scotland"}
    state, _ = run([notified(mappa=True, case_after=carried)])
    assert state.case == CaseRow("glasgow-city", "north-of-scotland")
    # an event recorded before the envelope carried it: worked out as intake did
    state, _ = run([notified(mappa=True)])
    assert state.case == CaseRow("glasgow-city", "glasgow")
    state, _ = run([notified()])
    assert state.case == CaseRow("glasgow-city", None)


def test_imported_history_is_watched_and_held_until_it_settles():
    # Imported long after it happened: every deadline still open is watched, first looked
    # at when the hold ends (the transaction's time + the settle time).
    state, _ = run([notified()], imported=True)
    open_ = [d for d in state.deadlines if d.status == "open"]
    assert open_ and all(d.watched and d.imported and d.next_fire_at == NOW + SETTLE for d in open_)
    # A later imported event of the case pushes the hold on; its own deadlines start held.
    later = NOW + dt.timedelta(minutes=5)
    state, _ = run([submitted(day(1))], imported=True, now=later, state=state)
    assert {d.key: d.next_fire_at for d in state.deadlines if d.status == "open"} == {
        ("sg_forward", 1): later + SETTLE, ("inspectorate_response", 1): later + SETTLE,
    }
    # A live event holds nothing.
    after, _ = run([info_requested(day(2))], now=later + dt.timedelta(minutes=1), state=state)
    assert {d.key: d.next_fire_at for d in after.deadlines if d.key[0] != "additional_info"} == {
        d.key: d.next_fire_at for d in state.deadlines
    }


def test_a_hold_never_brings_a_deadline_forward():
    # Imported as it happens: the warning is further off than the hold.
    state, _ = run([notified(incident_date="2026-11-02")], imported=True, now=MONDAY)
    sg = next(d for d in state.deadlines if d.rule == "sg_forward")
    assert sg.next_fire_at == sg.warn_at > MONDAY + SETTLE
    after, _ = run([criteria(day(0, 1), True)], imported=True, now=MONDAY, state=state)
    assert after is state  # wants nothing of it: criteria met


def test_a_live_notification_whose_deadline_had_passed_is_not_watched():
    late = day(30)
    state, _ = run([notified(at=late, incident_date="2026-10-01")], now=late)
    sg = next(d for d in state.deadlines if d.rule == "sg_forward")
    assert sg.watched  # its due time is ahead of the notification
    notification_deadline = next(d for d in state.deadlines if d.rule == "notification")
    assert not notification_deadline.watched and notification_deadline.next_fire_at is None


def test_unchanged_is_the_same_state_and_events_it_does_not_want_do_nothing():
    state, _ = run([notified()])
    for event in [criteria(day(1), True), criteria(day(2), True)]:
        assert not wants(event)
        assert decide(state, event, Context(NOW)).state is state
    done, _ = run([forwarded("scottish-government", day(1))], state=state)
    again = decide(done, forwarded("scottish-government", day(2)), Context(NOW))
    assert again.state is done and again.emit == ()


def test_an_early_stop_is_kept_once_and_taken_by_the_earliest():
    first, second = forwarded("scottish-government", day(0, 3)), forwarded("scottish-government", day(0, 2))
    state, out = run([first, second])
    assert out == [] and [e.stopped_at for e in state.early_stops] == [day(0, 3), day(0, 2)]
    assert decide(state, first, Context(NOW)).state is state  # the same stop again: kept already
    state, _ = run([notified()], state=state)
    sg = next(d for d in state.deadlines if d.rule == "sg_forward")
    assert sg.met_at == day(0, 2)  # the earliest stop meets it
    assert [e.stopped_at for e in state.early_stops] == [day(0, 3)]


# --- properties over histories of a case ----------------------------------------------

FOLLOW_UPS = st.sampled_from([
    ("review.submitted", lambda at: submitted(at)),
    ("review.submitted", lambda at: submitted(at, "comprehensive")),
    ("review.additional_info_requested", info_requested),
    ("review.additional_info_provided", info_provided),
    ("review.responded", lambda at: responded(at, "comprehensive_review_required")),
    ("review.responded", lambda at: responded(at, "concluded")),
    ("notification.criteria_assessed", lambda at: criteria(at, True)),
    ("notification.criteria_assessed", lambda at: criteria(at, False)),
    ("case.closed", lambda at: closed(at)),
])


@st.composite
def histories(draw):
    """A case's history as the consumer may apply it: its case events in order (the
    notification first), the routing topic's forwardings anywhere among them."""
    mappa = draw(st.booleans())
    incident = draw(st.integers(0, 40))
    case_events = [notified(mappa=mappa, incident_date=(MONDAY.date() - dt.timedelta(days=incident)).isoformat())]
    for n, (_, make) in enumerate(draw(st.lists(FOLLOW_UPS, max_size=8)), start=1):
        case_events.append(make(day(n * draw(st.integers(1, 20)) // 2 + n)))
    forwards = [forwarded(recipient, day(0, draw(st.integers(1, 200))))
                for recipient in draw(st.lists(st.sampled_from(["scottish-government", "sog:glasgow"]), max_size=3))]
    history = list(case_events)
    for forward in forwards:
        history.insert(draw(st.integers(0, len(history))), forward)
    return history


@settings(max_examples=150, deadline=None)
@given(histories(), st.booleans(), st.data())
def test_every_deadline_opened_is_settled_at_most_once_and_no_event_twice(history, imported, data):
    state, out = run(history, imported=imported)
    ids = [e.event_id for e in out]
    assert len(ids) == len(set(ids)), "a deadline event emitted twice"
    by_kind = Counter((e.event_type, e.data.rule, e.event_id) for e in out)
    opened = {(e.data.rule, e.event_id) for e in out if e.event_type == "deadline.opened"}
    assert len(opened) == len(state.deadlines)
    for deadline in state.deadlines:
        assert deadline.rule in RULE_NAMES
        ended = {kind: by_kind[f"deadline.{kind}", deadline.rule, event_id(CASE, deadline.rule, deadline.sequence, kind)]
                 for kind in ("opened", "met", "cancelled")}
        assert ended["opened"] == 1
        assert (ended["met"], ended["cancelled"]) == {
            "open": (0, 0), "met": (1, 0), "cancelled": (0, 1),
        }[deadline.status]
        assert deadline.next_fire_at is None or (deadline.status == "open" and deadline.watched)
        if deadline.status == "met":
            assert deadline.working_days_late == working_days_late(deadline.rule, deadline.started_at, deadline.met_at)
    # a deadline's events come in its own order: opened first
    first_seen: dict[tuple, str] = {}
    for e in out:
        first_seen.setdefault((e.data.rule, e.data.started_at), e.event_type)
    assert set(first_seen.values()) == {"deadline.opened"} or not first_seen
    # a stop is kept only where it may come before its start (another topic)
    assert all(RULES[early.rule].stop_may_come_first for early in state.early_stops)


@settings(max_examples=100, deadline=None)
@given(histories(), st.booleans(), st.data())
def test_deciding_event_by_event_equals_folding_the_batch_wherever_it_is_cut(history, imported, data):
    whole, whole_out = run(history, imported=imported)
    state, out = CaseDeadlines(CASE), []
    for event in history:
        decision = decide(state, event, Context(NOW, imported))
        state, out = decision.state, out + list(decision.emit)
    assert (state, out) == (whole, whole_out)
    cut = data.draw(st.integers(0, len(history)))
    first, first_out = run(history[:cut], imported=imported)
    second, second_out = run(history[cut:], imported=imported, state=first)
    assert (second, first_out + second_out) == (whole, whole_out)
