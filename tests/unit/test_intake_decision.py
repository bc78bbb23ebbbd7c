"""Intake's decision (services/intake/domain.decide): each case event carries the case
after it as the lifecycle folds it, so consumers read `case_after` instead of running
the state machine again (issue 14 item 2). In memory, no database."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.domain import decide, event_content
from shared.events import ANY_EVENT
from shared.lifecycle import Refused, case_after, fold
from tests.factories import envelope, mappa_notification, notification, review

LA = "glasgow-city"
ROLES = {
    "incident.notified": "council", "notification.criteria_assessed": "inspectorate",
    "sog.decision_recorded": "sog", "review.submitted": "council", "review.additional_info_requested": "inspectorate",
    "review.additional_info_provided": "council", "review.responded": "inspectorate", "case.closed": "inspectorate",
}
# Every case event with the data that exercises its transition (the state machine refuses what does not fit).
STEPS = [
    ("notification.criteria_assessed", {"meets_criteria": True}),
    ("notification.criteria_assessed", {"meets_criteria": False}),
    ("sog.decision_recorded", {"scr_under_mappa": False}),
    ("sog.decision_recorded", {"scr_under_mappa": True}),
    ("review.submitted", review()),
    ("review.additional_info_requested", {}),
    ("review.additional_info_provided", {}),
    ("review.responded", {"outcome": "comprehensive_review_required"}),
    ("review.responded", {"outcome": "concluded"}),
    ("case.closed", {"reason": "concluded"}),
    ("case.closed", {"reason": "withdrawn"}),
]


def _event(case_id: uuid.UUID, event_type: str, data: dict):
    return ANY_EVENT.validate_python(envelope(event_type, data, case_id=case_id, local_authority=LA, role=ROLES[event_type]))


def _decide_all(events):
    """Each event through decide, as intake appends them; the refused ones are left out."""
    case, carried, history = None, [], []
    for event in events:
        try:
            case, decided = decide(case, event)
        except Refused:
            continue
        carried.append(decided)
        history.append((event.event_type, event.local_authority, event.data.model_dump(mode="json")))
    return case, carried, history


def test_a_notification_carries_its_new_case_and_sog_region():
    event = _event(uuid.uuid4(), "incident.notified", mappa_notification())
    case, decided = decide(None, event)
    assert decided.case_after is not None
    assert decided.case_after.state == "notified" and decided.case_after.sog_region == case.sog_region is not None
    assert decided.case_after.responded is False and decided.case_after.closed_reason is None
    # Only the decision is added: the event is otherwise the one received.
    assert event_content(decided) == event_content(event) and event.case_after is None


def test_a_forwarding_record_is_not_a_case_event_and_carries_no_decision():
    case_id = uuid.uuid4()
    case, _ = decide(None, _event(case_id, "incident.notified", notification()))
    forwarded = ANY_EVENT.validate_python(envelope(
        "notification.forwarded",
        {"recipient": "scottish-government", "channel": "email", "attempts": 1, "delivered_at": "2026-11-03T09:00:00Z"},
        case_id=case_id, role="service",
    ))
    after, decided = decide(case, forwarded)
    assert after == case and decided.case_after is None


def test_a_decision_carried_in_the_file_is_replaced_by_intakes():
    event = _event(uuid.uuid4(), "incident.notified", notification())
    wrong = event.model_dump(mode="json") | {"case_after": {"state": "closed", "closed_reason": "withdrawn"}}
    _, decided = decide(None, ANY_EVENT.validate_python(wrong))
    assert decided.case_after is not None and decided.case_after.state == "notified"
    assert decided.case_after.closed_reason is None


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.lists(st.sampled_from(range(len(STEPS))), max_size=12))
def test_each_events_case_after_is_the_lifecycles_fold_of_the_history_up_to_it(mappa, picks):
    case_id = uuid.uuid4()
    notified = _event(case_id, "incident.notified", mappa_notification() if mappa else notification())
    events = [notified, *(_event(case_id, *STEPS[i]) for i in picks)]
    final, carried, history = _decide_all(events)
    previous = None
    for n, event in enumerate(carried, start=1):
        folded = fold(history[:n])
        assert folded is not None
        assert event.case_after is not None
        assert (event.case_after.state, event.case_after.sog_region, event.case_after.responded,
                event.case_after.closed_reason) == (folded.state.value, folded.sog_region, folded.responded,
                                                    folded.closed_reason)
        # What consumers read back is the fold too.
        previous = case_after(previous, event)
        assert previous == folded
    assert previous == final


def test_a_refused_event_has_no_decision():
    case, _ = decide(None, _event(uuid.uuid4(), "incident.notified", notification()))
    with pytest.raises(Refused):
        decide(case, _event(uuid.uuid4(), "review.responded", {"outcome": "concluded"}))
