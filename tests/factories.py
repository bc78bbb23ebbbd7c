"""Valid event bodies for tests, with keyword overrides."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from hypothesis import strategies as st


def notification(**overrides) -> dict:
    body = {
        "council_reference": "SIR-2026-001",
        "incident_date": "2026-11-02",
        "criterion": "charged_with_serious_offence",
        "incident_type": "serious_assault",
        "order_type": "community_payback_order",
        "subject_role": "perpetrator",
        "mappa": {"applies": False},
        "domestic_abuse_aggravated": False,
        "historical": False,
        "signed_off_by": "service_manager",
    }
    body.update(overrides)
    return body


def mappa_notification(**overrides) -> dict:
    return notification(mappa={"applies": True, "category": 1, "level": 2}, **overrides)


def review(**overrides) -> dict:
    body = {
        "review_type": "initial_analysis",
        "signed_off_by": "head_of_justice_social_work",
        "reviewer_independent": True,
        "risk_assessment": {"completed": True, "up_to_date": True, "tools": ["lscmi"]},
        "risk_management_plan": {"in_place": True, "informed_by_assessment": True},
        "order_reviews_referenced": True,
        "good_practice_identified": False,
        "findings": ["information_sharing_gap"],
    }
    body.update(overrides)
    return body


def envelope(event_type: str, data: dict, *, case_id=None, local_authority="glasgow-city", role="council") -> dict:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "case_id": str(case_id or uuid.uuid4()),
        "local_authority": local_authority,
        "received_at": now,
        "recorded_at": now,
        "actor": {"role": role, "id": "tok_test"},
        "data": data,
    }


def event_data(draw, event_type: str, received: dt.datetime) -> dict:
    """Valid data for `event_type`, drawn by a hypothesis `draw` (the lifecycle decides
    whether it fits the case): for the property tests that generate whole histories."""
    if event_type == "incident.notified":
        body = draw(st.sampled_from([notification, mappa_notification]))
        incident = received.date() - dt.timedelta(days=draw(st.integers(0, 12)))
        return body(incident_date=incident.isoformat(), incident_type=draw(st.sampled_from(["suicide", "stalking"])))
    if event_type == "notification.criteria_assessed":
        return {"meets_criteria": draw(st.booleans())}
    if event_type == "sog.decision_recorded":
        return {"scr_under_mappa": draw(st.booleans())}
    if event_type == "review.submitted":
        return review(review_type=draw(st.sampled_from(["initial_analysis", "comprehensive"])))
    if event_type == "review.responded":
        return {"outcome": draw(st.sampled_from(["concluded", "comprehensive_review_required"])),
                "iar_decision_appropriate": draw(st.booleans())}
    if event_type == "case.closed":
        return {"reason": draw(st.sampled_from(["concluded", "withdrawn"]))}
    return {}


# Who posts each case event (shared/lifecycle.py POSTED_BY); the rest: the Inspectorate,
# and derived events the platform's services.
_POSTED_BY_COUNCIL = {"incident.notified", "review.submitted", "review.additional_info_provided"}


def envelope_json(event_type: str, case_id: uuid.UUID, received: dt.datetime, data: dict, sequence: int | None = None,
                  case_after: dict | None = None) -> dict:
    """An event as it travels (JSON-ready), its id derived from its content so that a
    generated history gives the same ids every time."""
    derived = event_type.startswith(("notification.forward", "deadline."))
    role = "council" if event_type in _POSTED_BY_COUNCIL else "service" if derived else "inspectorate"
    event = {
        "event_id": str(uuid.uuid5(case_id, f"{event_type}/{sequence}/{received}/{json.dumps(data, sort_keys=True)}")),
        "event_type": event_type, "schema_version": 1, "case_id": str(case_id), "local_authority": "glasgow-city",
        "received_at": received.isoformat(), "recorded_at": received.isoformat(),
        "actor": {"role": role, "id": "tok_test"}, "data": data,
    }
    if case_after is not None:
        event["case_after"] = case_after
    return event | ({"sequence": sequence} if sequence else {})
