"""The label file (shared/reference/labels.json), the floor of dates that cannot be
(SIR_EARLIEST_DATE), and actor roles of imported history."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from shared.events import ANY_EVENT, DeadlineRule, IncidentNotifiedData
from shared.reference import LABELS, VOCABULARIES, label, parse_labels
from shared.settings import get_settings
from tests.factories import envelope, notification


def test_every_vocabulary_value_and_every_rule_has_a_published_label():
    for kind, values in VOCABULARIES.items():
        assert all(label(kind, v) != v for v in values if v not in ("other",)), kind
    assert set(LABELS["rule"]) == set(typing.get_args(DeadlineRule))
    assert label("incident_type", "murder_perpetrator") == "Murder (perpetrator)"
    assert label("order_type", "drug_treatment_and_testing_order") == "Drug Treatment and Testing Order (DTTO)"
    assert label("finding", "lscmi_not_completed_in_prison") == "LSCMI not completed in prison"


def test_a_label_file_missing_a_value_is_refused():
    broken = {k: dict(v) for k, v in LABELS.items()}
    del broken["incident_type"]["stalking"]
    with pytest.raises(ValueError, match="stalking"):
        parse_labels(broken, VOCABULARIES)


def test_the_floor_is_a_setting(monkeypatch):
    monkeypatch.setenv("SIR_EARLIEST_DATE", "2000-01-01")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationError) as refused:
            IncidentNotifiedData.model_validate(notification(incident_date="1999-12-31"))
        assert refused.value.errors()[0]["loc"] == ("incident_date",)
        assert "before 2000-01-01" in refused.value.errors()[0]["msg"]
        monkeypatch.delenv("SIR_EARLIEST_DATE")
        get_settings.cache_clear()
        assert IncidentNotifiedData.model_validate(notification(incident_date="1999-12-31"))  # default 1990
    finally:
        get_settings.cache_clear()


def test_imported_history_keeps_any_actor_role_as_given():
    body = envelope("incident.notified", notification(incident_date="2014-01-06"))
    body |= {"received_at": "2014-01-08T10:00:00Z", "recorded_at": "2014-01-08T10:00:00Z",
             "actor": {"role": "system", "id": "legacy-cms"}}
    assert ANY_EVENT.validate_python(body).actor.role == "system"
    with pytest.raises(ValidationError):
        ANY_EVENT.validate_python(body | {"actor": {"role": " ", "id": "x"}})
