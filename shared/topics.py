"""The platform's topic names and which topic each event type goes to: pure naming, no
Kafka client, so pure rules (services/deadlines/domain.py) can ask it. shared/messaging.py
re-exports all of it for the code that talks to the broker."""

from __future__ import annotations

from shared.reference import MAPPA_REGIONS

CASE_EVENTS = "sir.case-events.v1"
ROUTING_EVENTS = "sir.routing.v1"
DEADLINE_EVENTS = "sir.deadlines.v1"
PLATFORM_TOPICS = (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS)

_TOPIC_OF_PREFIX = {"notification.forward": ROUTING_EVENTS, "deadline.": DEADLINE_EVENTS}


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def outbound_topic(recipient: str) -> str:
    """Where routing's `topic` channel forwards a recipient's notifications (SPEC §5):
    `scottish-government` → sir.outbound.scottish-government.v1, `sog:<region>` →
    sir.outbound.sog.<region>.v1 (a Kafka topic name holds no colon)."""
    return f"sir.outbound.{recipient.replace(':', '.')}.v1"


# One outbound topic per recipient: the Scottish Government and each region's SOG.
OUTBOUND_TOPICS = tuple(outbound_topic(r) for r in ("scottish-government", *(f"sog:{g}" for g in MAPPA_REGIONS)))


def all_topics() -> tuple[str, ...]:
    """The platform's topics, their dead-letter topics and the outbound topics."""
    return PLATFORM_TOPICS + tuple(dead_letter_topic(t) for t in PLATFORM_TOPICS) + OUTBOUND_TOPICS


def topic_of(event_type: str) -> str:
    """The topic an event of `event_type` is published to."""
    for prefix, topic in _TOPIC_OF_PREFIX.items():
        if event_type.startswith(prefix):
            return topic
    return CASE_EVENTS
