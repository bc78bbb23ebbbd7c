"""Example events, one per event type: the AsyncAPI document's message examples and the
OpenAPI documents' request examples (services/asyncapi.py, shared/openapi.py). Each is
validated by its event model when built, so an example is always a real event."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from shared.events import ANY_EVENT, CASE_EVENT_TYPES, ROUTING_EVENT_TYPES, Envelope, event_type_of
from shared.lifecycle import fold

_AT = dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.timezone.utc)
_DUE = (_AT + dt.timedelta(days=14)).isoformat()
_DEADLINE = {"rule": "review_submission", "started_at": _AT.isoformat(), "due_at": _DUE}
EXAMPLE_DATA: dict[str, dict[str, Any]] = {
    "incident.notified": {
        "council_reference": "GC-2026-117", "incident_date": "2026-11-18", "criterion": "charged_with_serious_offence",
        "incident_type": "serious_assault", "order_type": "parole_licence", "subject_role": "perpetrator",
        "mappa": {"applies": True, "category": 1, "level": 2}, "domestic_abuse_aggravated": False,
        "historical": False, "signed_off_by": "service_manager",
    },
    "notification.criteria_assessed": {"meets_criteria": True},
    "sog.decision_recorded": {"scr_under_mappa": False},
    "review.submitted": {
        "review_type": "initial_analysis", "signed_off_by": "head_of_justice_social_work",
        "reviewer_independent": True,
        "risk_assessment": {"completed": True, "up_to_date": True, "tools": ["lscmi"]},
        "risk_management_plan": {"in_place": True, "informed_by_assessment": True},
        "order_reviews_referenced": True, "good_practice_identified": False,
        "findings": ["information_sharing_gap"],
    },
    "review.additional_info_requested": {"note": "Please attach the risk management plan."},
    "review.additional_info_provided": {},
    "review.responded": {"outcome": "concluded", "iar_decision_appropriate": True, "high_quality": True},
    "case.closed": {"reason": "concluded"},
    "notification.forwarded": {
        "recipient": "scottish-government", "channel": "topic", "attempts": 1, "delivered_at": _AT.isoformat(),
    },
    "notification.forward_failed": {
        "recipient": "sog:north-strathclyde", "attempts": 7, "error": "HTTP 503",
    },
    "deadline.opened": _DEADLINE,
    "deadline.warning": _DEADLINE,
    "deadline.met": _DEADLINE | {"met_at": (_AT + dt.timedelta(days=9)).isoformat()},
    "deadline.breached": _DEADLINE | {"breached_at": _DUE, "working_days_late": 0},
    "deadline.cancelled": _DEADLINE,
}
_ACTORS = {"incident": "council", "review": "council", "notification": "inspectorate", "sog": "sog", "case": "inspectorate"}

def example_event(model: type[Envelope]) -> Envelope:
    """A valid event of `model`'s type (the document's example; the tests validate it)."""
    event_type = event_type_of(model)
    case_id = uuid.uuid5(uuid.NAMESPACE_URL, "sir-example-case")
    envelope: dict[str, Any] = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sir-example/{event_type}")),
        "event_type": event_type,
        "schema_version": 1,
        "case_id": str(case_id),
        "local_authority": "glasgow-city",
        "received_at": _AT.isoformat(),
        "recorded_at": _AT.isoformat(),
        "actor": {"role": _ACTORS.get(event_type.split(".")[0], "service"), "id": "tok_3f9a1c"},
        "data": EXAMPLE_DATA[event_type],
    }
    if model in CASE_EVENT_TYPES:
        envelope["sequence"] = 1 + CASE_EVENT_TYPES.index(model)
        # The examples make one case, in order: each carries the case after it as intake decides it.
        case = fold(
            (event_type_of(m), "glasgow-city", EXAMPLE_DATA[event_type_of(m)])
            for m in CASE_EVENT_TYPES[: envelope["sequence"]]
        )
        assert case is not None
        envelope["case_after"] = {
            "state": case.state.value, "sog_region": case.sog_region, "responded": case.responded,
            "closed_reason": case.closed_reason,
        }
    else:
        envelope["actor"] = {"role": "service", "id": "routing" if model in ROUTING_EVENT_TYPES else "deadlines"}
        envelope["causation_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "sir-example/incident.notified"))
    return ANY_EVENT.validate_python(envelope)
