"""The console's pure rules: forms to API bodies, 422s to fields, actions, queues, sessions."""

import datetime as dt

from services.console import domain
from services.console.sessions import Sessions


def test_a_form_becomes_the_api_body_and_empty_answers_are_left_for_the_api_to_name():
    form = {
        "council_reference": ["GC-1"], "incident_date": ["2026-11-24"], "became_aware_date": [""],
        "mappa.applies": ["yes"], "mappa.category": ["1"], "mappa.level": ["2"], "historical": ["no"],
    }
    body = domain.body_of(form, domain.NOTIFICATION_FIELDS)
    assert body == {"council_reference": "GC-1", "incident_date": "2026-11-24",
                    "mappa": {"applies": True, "category": 1, "level": 2}, "historical": False}


def test_mappa_not_applying_drops_a_stale_category_and_level():
    form = {"mappa.applies": ["no"], "mappa.category": ["1"], "mappa.level": ["2"]}
    assert domain.body_of(form, domain.NOTIFICATION_FIELDS) == {"mappa": {"applies": False}}


def test_checkboxes_become_lists_even_when_none_is_ticked():
    _, fields = domain.ACTIONS["review"]
    body = domain.body_of({"findings": ["staffing_shortfall", "other"]}, fields)
    assert body == {"findings": ["staffing_shortfall", "other"], "risk_assessment": {"tools": []}}


def test_422_errors_are_keyed_by_form_field_in_plain_words():
    detail = [
        {"loc": ["body", "incident_date"], "msg": "Input should be a valid date", "type": "date_from_datetime_parsing"},
        {"loc": ["body", "mappa", "level"], "msg": "Field required", "type": "missing"},
        {"loc": ["body", "mappa"], "msg": "Value error, category and level are required when MAPPA applies",
         "type": "value_error"},
        {"loc": ["body", "criterion"], "msg": "Input should be 'a' or 'b'", "type": "literal_error"},
    ]
    assert domain.field_errors(detail) == {
        "incident_date": "Enter a real date, for example 2026-11-20",
        "mappa.level": "Choose the MAPPA level",
        "mappa": "category and level are required when MAPPA applies",
        "criterion": "Choose one of the options",
    }
    assert domain.dom_id("mappa.level") == "field-mappa-level"


def _facts(state, **kw):
    return domain.CaseFacts(state=state, local_authority="fife", sog_region=kw.get("sog"),
                            responded=kw.get("responded", False), assessed=kw.get("assessed", False))


def test_each_role_is_offered_what_the_lifecycle_allows():
    assert domain.actions_for("council", _facts("notified")) == ["review"]
    assert domain.actions_for("council", _facts("awaiting_information")) == ["provide-information"]
    assert domain.actions_for("council", _facts("under_review")) == []
    assert domain.actions_for("inspectorate", _facts("notified", sog="fife")) == ["assess", "sog-decision", "close"]
    assert domain.actions_for("inspectorate", _facts("notified", assessed=True)) == ["close"]
    assert domain.actions_for("inspectorate", _facts("under_review", responded=True)) == [
        "request-information", "respond", "close"]
    assert domain.actions_for("inspectorate", _facts("concluded")) == ["close"]
    assert domain.actions_for("sog", _facts("under_review", sog="fife")) == ["sog-decision"]
    assert domain.actions_for("sog", _facts("concluded", sog="fife")) == []
    assert domain.actions_for("inspectorate", _facts("closed")) == []


def test_queues_put_the_overdue_first_and_keep_30_days_of_breaches():
    now = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    deadlines = [
        {"status": "open", "due_at": "2026-12-20T00:00:00+00:00"},
        {"status": "breached", "due_at": "2026-11-01T00:00:00+00:00", "breached_at": "2026-11-01T00:00:00+00:00"},
        {"status": "breached", "due_at": "2026-10-01T00:00:00+00:00", "breached_at": "2026-10-01T00:00:00+00:00",
         "met_at": "2026-10-02T00:00:00+00:00"},
    ]
    assert [d["due_at"][:10] for d in domain.awaiting(deadlines)] == ["2026-11-01", "2026-12-20"]
    assert [d["due_at"][:10] for d in domain.recent_breaches(deadlines, now)] == ["2026-11-01"]
    # Due at midnight is due by the end of the day before.
    assert domain.days_left("2026-12-20T00:00:00+00:00", now) == 19
    assert domain.days_left("2026-12-20T17:00:00+00:00", now) == 20
    assert domain.days_left("2026-11-01T00:00:00+00:00", now) == -30
    assert domain.due("2026-12-03T00:00:00+00:00") == "the end of 2 December 2026"
    assert domain.due("2027-02-28T23:59:59.999999+00:00") == "the end of 28 February 2027"


def test_the_timeline_is_in_time_order():
    events = [{"event_type": "incident.notified", "recorded_at": "2026-11-24T10:00:00+00:00",
               "data": {"incident_type": "serious_assault", "criterion": "practice_concerns"}}]
    deadlines = [{"rule": "notification", "started_at": "2026-11-20T00:00:00+00:00", "due_at": "2026-11-27T00:00:00+00:00",
                  "limit": "5 working days", "owner": "council", "met_at": "2026-11-24T10:00:00+00:00"}]
    deliveries = [{"recipient": "scottish-government", "delivered_at": "2026-11-24T10:00:01+00:00",
                   "channel": "topic", "attempts": 1}]
    titles = [e.title for e in domain.timeline(events, deadlines, deliveries, lambda kind, value: value)]
    assert titles == ["Deadline opened: notification", "Incident notified", "Deadline met: notification",
                      "Forwarded to the Scottish Government"]
    assert domain.recipient_name("sog:lothian-and-borders") == "the Lothian and Borders SOG"


def test_sessions_expire_when_idle_or_old_and_end_with_their_token():
    now = [dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)]
    sessions = Sessions(dt.timedelta(minutes=30), dt.timedelta(hours=8), clock=lambda: now[0])
    identity = {"token_id": "t1", "role": "council", "local_authority": "fife"}
    first, second = sessions.start("sir_t1_x", identity), sessions.start("sir_t1_x", identity)
    now[0] += dt.timedelta(minutes=20)
    assert sessions.get(first.id) is first
    now[0] += dt.timedelta(minutes=31)
    assert sessions.get(second.id) is None  # idle too long
    assert sessions.get(first.id) is None
    third = sessions.start("sir_t1_x", identity)
    for _ in range(20):  # used every 25 minutes, it still ends 8 hours after sign-in
        now[0] += dt.timedelta(minutes=25)
        sessions.get(third.id)
    assert sessions.get(third.id) is None
    fourth = sessions.start("sir_t1_x", identity)
    sessions.end_token("t1")
    assert sessions.get(fourth.id) is None and len(sessions) == 0


def test_categorisation_warnings_read_as_sentences():
    from shared.categorisation import GAPS

    # Every gap intake warns of has its plain sentence; anything else is shown with its reason.
    assert set(domain.WARNING_TEXT) == set(GAPS)
    warning = {"field": "incident_type_detail", "reason": "incident_type is 'other' with no incident_type_detail"}
    assert domain.warning_text(warning) == "The type of incident is Other: say in a few words what happened."
    assert domain.warning_text({"field": "new_gap", "reason": "something new"}) == "Please follow up: something new."
