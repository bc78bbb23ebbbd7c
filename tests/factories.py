"""Valid event bodies for tests, with keyword overrides."""

from __future__ import annotations

import datetime as dt
import uuid


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
