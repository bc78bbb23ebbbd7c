"""Categorisation quality (shared/categorisation.py) and incident.notified schema version 2
(domestic_abuse_aggravated true / false / not known; version 1 events read as before)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from services.reporting.domain import apply_case_event
from shared.categorisation import gaps, warnings
from shared.events import ANY_EVENT, IncidentNotifiedData
from tests.factories import envelope, notification

RECEIVED = dt.datetime(2026, 11, 4, 10, tzinfo=dt.timezone.utc)  # two working days after 2 November


def _data(**overrides) -> IncidentNotifiedData:
    return IncidentNotifiedData.model_validate(notification(**overrides))


def test_a_complete_notification_has_no_gaps():
    assert gaps(_data(), RECEIVED) == [] and warnings(_data(), RECEIVED) == []


def test_other_without_detail_is_vague_but_with_detail_is_not():
    assert gaps(_data(incident_type="other"), RECEIVED) == ["incident_type_detail"]
    assert gaps(_data(incident_type="other", incident_type_detail="fire at a hostel"), RECEIVED) == []


def test_domestic_abuse_not_known_matters_for_violent_or_sexual_types_only():
    assert gaps(_data(domestic_abuse_aggravated=None), RECEIVED) == ["domestic_abuse_aggravated"]
    assert gaps(_data(incident_type="sexual_offence", domestic_abuse_aggravated=None), RECEIVED) == [
        "domestic_abuse_aggravated"]
    assert gaps(_data(incident_type="suicide", domestic_abuse_aggravated=None), RECEIVED) == []
    assert gaps(_data(domestic_abuse_aggravated=False), RECEIVED) == []


def test_a_late_notification_should_say_when_the_council_became_aware():
    late = dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc)  # 14 working days
    assert gaps(_data(), late) == ["became_aware_date"]
    assert gaps(_data(became_aware_date="2026-11-18"), late) == []
    assert [w["field"] for w in warnings(_data(incident_type="other", domestic_abuse_aggravated=None), late)] == [
        "incident_type_detail", "became_aware_date"]  # 'other' is not a violent type


def test_mappa_without_category_or_level_is_refused_so_never_a_gap():
    with pytest.raises(ValidationError, match="category and level are required"):
        _data(mappa={"applies": True})


def _event(version: int | None, **data):
    body = envelope("incident.notified", notification(**data))
    if version is None:
        body.pop("schema_version")
    else:
        body["schema_version"] = version
    return ANY_EVENT.validate_python(body)


def test_schema_version_2_allows_not_known_and_version_1_reads_as_before():
    assert _event(2, domestic_abuse_aggravated=None).data.domestic_abuse_aggravated is None
    assert _event(None, domestic_abuse_aggravated=None).schema_version == 2  # new events are version 2
    assert _event(1).data.domestic_abuse_aggravated is False
    body = notification()
    del body["domestic_abuse_aggravated"]
    with pytest.raises(ValidationError, match="true or false in schema version 1"):
        ANY_EVENT.validate_python(envelope("incident.notified", body) | {"schema_version": 1})


def test_the_projection_keeps_the_gaps_and_not_known():
    event = _event(2, incident_type="other", domestic_abuse_aggravated=None)
    row = apply_case_event(None, event).notification
    assert row.domestic_abuse_aggravated is None
    assert row.categorisation_gaps == ("incident_type_detail", "became_aware_date")  # received today, incident 2 Nov
