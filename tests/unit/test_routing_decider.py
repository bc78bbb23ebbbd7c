"""Routing's decider in memory (services/routing/domain.py `decide`): what a notification
owes its recipients, and the events a `topic` delivery emits. The same deliveries and
records as the integration tests see (tests/integration/test_routing.py), without
PostgreSQL or a broker."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.domain import (
    ALL_RECIPIENTS,
    SCOTTISH_GOVERNMENT,
    Deliveries,
    Owing,
    decide,
    forwarded,
    wants,
)
from shared.decider import Addressed, Context, fold
from shared.events import ANY_EVENT, NotificationForwarded
from shared.topics import outbound_topic
from tests.factories import envelope, mappa_notification, notification, review

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
LIVE = Context(NOW)
IMPORTED = Context(NOW, imported=True)
SOG = "sog:glasgow"
ALL_TOPIC = dict.fromkeys(ALL_RECIPIENTS, "topic")


def notified(body: dict | None = None, *, case_id: uuid.UUID | None = None, region: str | bool | None = False):
    """An incident.notified event; `region` (unless False) is the SOG region intake
    decided, carried in `case_after` (left out: an event recorded before it existed)."""
    raw = envelope("incident.notified", body or notification(), case_id=case_id) | {"sequence": 1}
    if region is not False:
        raw["case_after"] = {"state": "notified", "sog_region": region}
    return ANY_EVENT.validate_python(raw)


def state(channels: dict[str, str] | None = None, owed: tuple[str, ...] = ()) -> Deliveries:
    return Deliveries(frozenset(owed), (), ALL_TOPIC if channels is None else channels)


def topic_delivery(event, recipient: str) -> list:
    """What a topic delivery emits, as `delivery.deliver_by_topic` has always emitted it:
    the notification on the recipient's outbound topic, then its record."""
    return [
        Addressed(event, outbound_topic(recipient)),
        forwarded(event.case_id, event.local_authority, recipient, "topic", 1, NOW, NOW, event.event_id),
    ]


# --- table: one notification, one state -------------------------------------------------------

WEBHOOK_SG = ALL_TOPIC | {SCOTTISH_GOVERNMENT: "webhook"}

CASES = [
    # (what, body, region carried, channels, owed before, context) -> owed after, by topic, pending
    ("no MAPPA: the SG only", notification(), None, None, (), LIVE, {SCOTTISH_GOVERNMENT}, [SCOTTISH_GOVERNMENT], []),
    ("MAPPA: the SG, then the SOG", mappa_notification(), "glasgow", None, (), LIVE,
     {SCOTTISH_GOVERNMENT, SOG}, [SCOTTISH_GOVERNMENT, SOG], []),
    ("the region intake decided, not the reference table's", mappa_notification(), "tayside", None, (), LIVE,
     {SCOTTISH_GOVERNMENT, "sog:tayside"}, [SCOTTISH_GOVERNMENT, "sog:tayside"], []),
    ("an event from before case_after: the region worked out", mappa_notification(), False, None, (), LIVE,
     {SCOTTISH_GOVERNMENT, SOG}, [SCOTTISH_GOVERNMENT, SOG], []),
    ("cross-border supervision, worked out", mappa_notification(supervising_local_authority="dundee-city"), False,
     None, (), LIVE, {SCOTTISH_GOVERNMENT, "sog:tayside"}, [SCOTTISH_GOVERNMENT, "sog:tayside"], []),
    ("a webhook recipient waits for the delivery loop", mappa_notification(), "glasgow", WEBHOOK_SG, (), LIVE,
     {SCOTTISH_GOVERNMENT, SOG}, [SOG], [SCOTTISH_GOVERNMENT]),
    ("a recipient not configured yet waits too", notification(), None, {}, (), LIVE,
     {SCOTTISH_GOVERNMENT}, [], [SCOTTISH_GOVERNMENT]),
    ("owed already: only the rest", mappa_notification(), "glasgow", None, (SCOTTISH_GOVERNMENT,), LIVE,
     {SCOTTISH_GOVERNMENT, SOG}, [SOG], []),
]


@pytest.mark.parametrize(
    ("body", "region", "channels", "owed", "context", "owed_after", "by_topic", "pending"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES],
)
def test_a_notification_owes_its_recipients(body, region, channels, owed, context, owed_after, by_topic, pending):
    event = notified(body, region=region)
    before = state(channels, owed)
    decision = decide(before, event, context)
    assert decision.state.owed == owed_after
    assert decision.state.channels is before.channels
    assert [o.recipient for o in decision.state.decided if o.delivered_at is not None] == by_topic
    assert [o.recipient for o in decision.state.decided if o.delivered_at is None] == pending
    assert all(o.notification is event for o in decision.state.decided)
    assert all(o.delivered_at in (None, NOW) for o in decision.state.decided)
    assert decision.state.wakes_delivery_loop == bool(pending)
    assert list(decision.emit) == [out for recipient in by_topic for out in topic_delivery(event, recipient)]


@pytest.mark.parametrize(
    ("what", "event", "context", "owed"),
    [
        ("imported history was forwarded when it happened", notified(region=None), IMPORTED, ()),
        ("the same notification again", notified(region=None), LIVE, (SCOTTISH_GOVERNMENT,)),
        ("not a notification", ANY_EVENT.validate_python(envelope("review.submitted", review()) | {"sequence": 2}),
         LIVE, ()),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_nothing_owed_leaves_the_state_as_it_was(what, event, context, owed):
    before = state(owed=owed)
    decision = decide(before, event, context)
    assert decision.state is before and decision.emit == ()


def test_routing_wants_notifications_only():
    assert wants(notified())
    assert not wants(ANY_EVENT.validate_python(envelope("review.submitted", review()) | {"sequence": 2}))


def test_the_forwarded_record_is_the_one_the_delivery_loop_writes():
    event = notified(mappa_notification(), region="glasgow")
    copy, record = decide(state(), event, LIVE).emit[:2]
    assert copy == Addressed(event, "sir.outbound.scottish-government.v1")
    assert isinstance(record, NotificationForwarded)
    assert record.event_id == uuid.uuid5(uuid.UUID("5b0c3f0e-8f5e-4d2b-9a57-3c1f6c1f1a04"),
                                         f"{event.case_id}/scottish-government/forwarded")
    assert record.causation_id == event.event_id and record.case_id == event.case_id
    assert record.local_authority == event.local_authority
    assert record.received_at == record.recorded_at == NOW
    assert record.data.model_dump() == {
        "recipient": SCOTTISH_GOVERNMENT, "channel": "topic", "attempts": 1, "delivered_at": NOW,
    }


# --- hypothesis: any stream of notifications, duplicates and batches --------------------------

CASE_IDS = [uuid.UUID(int=n) for n in range(1, 5)]


@st.composite
def streams(draw):
    """Notifications of a few cases (each case one notification, delivered any number of
    times, live or imported), other case events between them, the recipients' channels,
    and where the stream is cut into the consumer's batches."""
    bodies = {
        case_id: draw(st.sampled_from([(notification(), None), (mappa_notification(), "glasgow")]))
        for case_id in CASE_IDS
    }
    events = {case_id: notified(body, case_id=case_id, region=region) for case_id, (body, region) in bodies.items()}
    other = {
        case_id: ANY_EVENT.validate_python(envelope("review.submitted", review(), case_id=case_id) | {"sequence": 2})
        for case_id in CASE_IDS
    }
    stream = draw(st.lists(
        st.tuples(st.sampled_from(CASE_IDS), st.booleans(), st.booleans()).map(
            lambda item: (other[item[0]] if item[2] else events[item[0]], item[1])
        ),
        max_size=20,
    ))
    channels = draw(st.dictionaries(st.sampled_from(ALL_RECIPIENTS), st.sampled_from(["topic", "webhook"])))
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=4)))
    return events, stream, channels, cuts


def run(stream, channels, cuts):
    """The shell in memory: each batch loads the stored deliveries, folds and stores what
    was decided (as repository.load_deliveries and save_deliveries do)."""
    stored: dict[uuid.UUID, set[str]] = {case_id: set() for case_id in CASE_IDS}
    decided: list[Owing] = []
    emitted: list = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        batch = [(event, Context(NOW, imported)) for event, imported in stream[start:end] if wants(event)]
        states = {case_id: Deliveries(frozenset(stored[case_id]), (), channels) for case_id in CASE_IDS}
        folded = fold(decide, states, batch)
        for case_id in folded.changed:
            for owing in folded.states[case_id].decided:
                assert owing.recipient not in stored[case_id], "a delivery stored twice"
                stored[case_id].add(owing.recipient)
                decided.append(owing)
        emitted += [out for out, _ in folded.emitted]
    return stored, decided, emitted


@settings(max_examples=100, deadline=None)
@given(streams())
def test_a_notification_is_owed_once_to_each_recipient_whatever_the_duplicates(drawn):
    events, stream, channels, cuts = drawn
    stored, decided, _ = run(stream, channels, cuts)
    live = {event.case_id for event, imported in stream if event.event_type == "incident.notified" and not imported}
    for case_id in CASE_IDS:
        expected = [SCOTTISH_GOVERNMENT] + ([SOG] if events[case_id].case_after.sog_region else [])
        # Owed once to each recipient of a live notification; imported ones owe nothing.
        assert sorted(stored[case_id]) == (sorted(expected) if case_id in live else [])
    assert len(decided) == len({(o.notification.case_id, o.recipient) for o in decided})


@settings(max_examples=100, deadline=None)
@given(streams())
def test_topic_recipients_get_exactly_one_forwarded_event_each(drawn):
    _, stream, channels, cuts = drawn
    stored, decided, emitted = run(stream, channels, cuts)
    records = [out for out in emitted if isinstance(out, NotificationForwarded)]
    by_topic = {(o.notification.case_id, o.recipient) for o in decided if o.delivered_at is not None}
    assert Counter((r.case_id, r.data.recipient) for r in records) == Counter(by_topic)
    assert by_topic == {(case_id, r) for case_id, rs in stored.items() for r in rs if channels.get(r) == "topic"}
    # Each record follows the copy it records, on the recipient's outbound topic.
    assert len(emitted) == 2 * len(records)
    for copy, record in zip(emitted[::2], emitted[1::2], strict=True):
        assert copy == Addressed(copy.event, outbound_topic(record.data.recipient))
        assert record.causation_id == copy.event.event_id and record.case_id == copy.event.case_id
    # Emitted in the order of the stream: a case's copies are the notification itself.
    assert all(copy.event.event_type == "incident.notified" for copy in emitted[::2])
