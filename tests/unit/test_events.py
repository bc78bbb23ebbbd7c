import pytest
from pydantic import ValidationError

from shared.events import ANY_EVENT, CASE_EVENT, IncidentNotified
from tests.factories import envelope, mappa_notification, notification, review


def test_a_notification_parses_to_its_model():
    event = CASE_EVENT.validate_python(envelope("incident.notified", notification()))
    assert isinstance(event, IncidentNotified)
    assert event.data.incident_type == "serious_assault"


def test_every_case_event_type_parses():
    samples = {
        "incident.notified": mappa_notification(),
        "notification.criteria_assessed": {"meets_criteria": True},
        "sog.decision_recorded": {"scr_under_mappa": False},
        "review.submitted": review(),
        "review.additional_info_requested": {"note": "risk plan"},
        "review.additional_info_provided": {},
        "review.responded": {"outcome": "concluded", "high_quality": True},
        "case.closed": {"reason": "withdrawn"},
    }
    for event_type, data in samples.items():
        assert CASE_EVENT.validate_python(envelope(event_type, data)).event_type == event_type


def test_routing_and_deadline_events_parse():
    forwarded = envelope(
        "notification.forwarded",
        {"recipient": "sog:tayside", "channel": "topic", "attempts": 1, "delivered_at": "2026-11-03T10:00:00Z"},
        role="service",
    )
    breached = envelope(
        "deadline.breached",
        {"rule": "sg_forward", "started_at": "2026-11-02T10:00:00Z", "due_at": "2026-11-05T00:00:00Z",
         "breached_at": "2026-11-05T00:00:00Z"},
        role="service",
    )
    assert ANY_EVENT.validate_python(forwarded).data.recipient == "sog:tayside"
    assert ANY_EVENT.validate_python(breached).data.rule == "sg_forward"


def _error_locations(payload) -> list[tuple]:
    with pytest.raises(ValidationError) as caught:
        CASE_EVENT.validate_python(payload)
    return [e["loc"] for e in caught.value.errors()]


def test_an_unknown_field_is_refused_with_its_name():
    locations = _error_locations(envelope("incident.notified", notification(name_of_person="x")))
    assert ("incident.notified", "data", "name_of_person") in locations


def test_a_bad_vocabulary_value_is_refused_with_its_field():
    locations = _error_locations(envelope("incident.notified", notification(incident_type="arson")))
    assert ("incident.notified", "data", "incident_type") in locations


def test_an_unknown_local_authority_is_refused():
    locations = _error_locations(envelope("incident.notified", notification(), local_authority="gotham"))
    assert ("incident.notified", "local_authority") in locations


def test_an_unknown_event_type_is_refused():
    with pytest.raises(ValidationError):
        CASE_EVENT.validate_python(envelope("case.reopened", {}))


def test_mappa_category_and_level_go_with_applies():
    with pytest.raises(ValidationError, match="required when MAPPA applies"):
        CASE_EVENT.validate_python(envelope("incident.notified", notification(mappa={"applies": True})))
    with pytest.raises(ValidationError, match="only when MAPPA applies"):
        CASE_EVENT.validate_python(
            envelope("incident.notified", notification(mappa={"applies": False, "level": 1}))
        )


def test_awareness_cannot_precede_the_incident():
    with pytest.raises(ValidationError, match="became_aware_date"):
        CASE_EVENT.validate_python(
            envelope("incident.notified", notification(became_aware_date="2026-11-01"))
        )


def test_timestamps_must_carry_a_zone():
    payload = envelope("case.closed", {"reason": "withdrawn"})
    payload["received_at"] = "2026-11-02T10:00:00"
    with pytest.raises(ValidationError):
        CASE_EVENT.validate_python(payload)


def test_an_event_round_trips_through_json():
    event = CASE_EVENT.validate_python(envelope("review.submitted", review()))
    assert CASE_EVENT.validate_json(event.model_dump_json()) == event


def test_free_text_the_store_cannot_hold_is_refused_naming_the_field():
    import pydantic

    from shared.events import IncidentNotifiedData
    from tests.factories import notification

    for bad in ("GC\u00001", "GC-\ud800", "x" * 65, ""):
        with pytest.raises(pydantic.ValidationError) as refused:
            IncidentNotifiedData(**notification(council_reference=bad))
        assert refused.value.errors()[0]["loc"] == ("council_reference",)


def test_vocabulary_lists_are_bounded_and_keep_each_value_once():
    import pydantic

    from shared.events import ReviewSubmittedData
    from shared.reference import VOCABULARIES
    from tests.factories import review

    assert ReviewSubmittedData(**review(findings=["other", "other"])).findings == ["other"]
    with pytest.raises(pydantic.ValidationError):
        ReviewSubmittedData(**review(findings=["other"] * (len(VOCABULARIES["finding"]) + 1)))
    schema = ReviewSubmittedData.model_json_schema()["properties"]["findings"]
    assert schema["maxItems"] == len(VOCABULARIES["finding"])


def test_a_mappa_notification_before_the_first_region_grouping_names_incident_date():
    import pydantic

    from shared.events import IncidentNotifiedData
    from tests.factories import mappa_notification, notification

    with pytest.raises(pydantic.ValidationError) as refused:
        IncidentNotifiedData(**mappa_notification(incident_date="1999-12-31"))
    assert refused.value.errors()[0]["loc"] == ("incident_date",)
    IncidentNotifiedData(**notification(incident_date="1999-12-31"))  # no MAPPA: no region needed
