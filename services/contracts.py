"""The published contracts, generated from the code: the AsyncAPI document of every topic
(`docs/asyncapi.json`) and each service's OpenAPI document (`docs/openapi-<service>.json`).

`sir docs` (or `python -m services.contracts`) writes them; `sir docs --check` and
`tests/integration/test_contracts.py` fail when the committed ones differ. Output is
deterministic: sorted keys, no timestamps, nothing from the environment.

The AsyncAPI document comes from FastStream's own generator, over one documentation
broker that carries, for each service, the subscribers its `Service.consumes` declares
(same group ids and titles as the running apps) and publishers for the topics it writes
through its outbox (the relay publishes with aiokafka, not through FastStream), with the
pydantic event models of `shared/events.py` as payloads. The CloudEvents headers of
SPEC §3 are added to every message.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.events import AnyEvent, CaseEvent, DeadlineEvent, IncidentNotified, RoutingEvent
from shared.messaging import (
    CASE_EVENTS,
    DEADLINE_EVENTS,
    IMPORTED_HEADER,
    OUTBOUND_TOPICS,
    ROUTING_EVENTS,
    dead_letter_topic,
)
from shared.settings import SERVICES, Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
# The broker named in the document: docker-compose's; each deployment sets KAFKA_BOOTSTRAP.
DOCUMENTED_BOOTSTRAP = "kafka:9092"

PAYLOADS: dict[str, Any] = {
    CASE_EVENTS: CaseEvent,
    ROUTING_EVENTS: RoutingEvent,
    DEADLINE_EVENTS: DeadlineEvent,
    **{topic: IncidentNotified for topic in OUTBOUND_TOPICS},
}
TOPIC_DESCRIPTIONS = {
    CASE_EVENTS: "Case events of SPEC §3 (key = case_id, so one case's events stay in order), "
    "published by intake from its event store.",
    ROUTING_EVENTS: "Forwarding of notifications: notification.forwarded and notification.forward_failed "
    "(key = case_id).",
    DEADLINE_EVENTS: "Deadline events of SPEC §4: opened, warning, met, breached, cancelled (key = case_id).",
    **{
        topic: "Notifications forwarded to one recipient whose channel is `topic` (SPEC §5):"
        " the incident.notified event as intake recorded it."
        for topic in OUTBOUND_TOPICS
    },
}
# What each service writes to its outbox, by topic (beside the dead-letter topics of
# what it consumes). Intake also publishes imported forwarding records to sir.routing.v1.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "intake": (CASE_EVENTS, ROUTING_EVENTS),
    "routing": (ROUTING_EVENTS, *OUTBOUND_TOPICS),
    "deadlines": (DEADLINE_EVENTS,),
    "reporting": (),
}

_CLOUDEVENTS_HEADERS = {
    "ce_specversion": {"const": "1.0", "description": "CloudEvents spec version"},
    "ce_id": {"format": "uuid", "description": "= event_id; consumers dedupe on it"},
    "ce_source": {"pattern": "^/sir/[a-z]+$", "description": "/sir/<service> that published the event"},
    "ce_type": {"description": "= event_type"},
    "ce_time": {"format": "date-time", "description": "= recorded_at"},
    "ce_subject": {"format": "uuid", "description": "= case_id"},
    "content-type": {"const": "application/json"},
    IMPORTED_HEADER: {
        "const": "true",
        "description": "present on imported history only (`sir import`): routing does not deliver it again",
    },
}
_DEAD_LETTER_HEADERS = {
    "dlq_error": {"description": "why the consumer gave up (validation error or last handler error)"},
    "dlq_consumer": {"description": "<group id>:<topic> of the consumer that gave up"},
    "dlq_source": {"description": "<topic>/<partition>/<offset> of the original message"},
}


def asyncapi() -> dict:
    broker = KafkaBroker(DOCUMENTED_BOOTSTRAP, description="Kafka (Apache Kafka or Tansu); see KAFKA_BOOTSTRAP")
    for name in SERVICES:
        service = importlib.import_module(f"services.{name}.app").SERVICE
        for topic in PUBLISHES[name]:
            broker.publisher(
                topic, schema=PAYLOADS[topic], title=f"{name}/{topic}",
                description=TOPIC_DESCRIPTIONS[topic] + f" Written by {name}.",
            )
        for topic in sorted(service.consumes):
            broker.subscriber(
                topic, group_id=service.group_id, title=f"{service.group_id}/{topic}",
                description=f"{name} applies each event once (consumer group {service.group_id}).",
            )(_reader(PAYLOADS.get(topic, AnyEvent)))
            broker.publisher(
                dead_letter_topic(topic), schema=PAYLOADS.get(topic, AnyEvent),
                title=f"{service.group_id}/{dead_letter_topic(topic)}",
                description=f"Messages of {topic} that {name} could not apply: the original bytes and headers"
                " plus dlq_error, dlq_consumer and dlq_source.",
            )
    document = AsyncAPI(
        broker,
        title="SIR platform topics",
        version="1.0",
        description="Every topic of the SIR platform. Each message is the SPEC §3 envelope as JSON"
        " with CloudEvents binary-mode headers. See docs/consumer-guide.md.",
    ).to_specification().to_jsonable()
    return _with_headers(document)


def openapi(service: str) -> dict:
    app = importlib.import_module(f"services.{service}.app").build(Settings())
    return app.openapi()


def documents() -> dict[Path, dict]:
    return {DOCS / "asyncapi.json": asyncapi()} | {DOCS / f"openapi-{name}.json": openapi(name) for name in SERVICES}


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check() -> list[Path]:
    """The committed documents that differ from what the code generates."""
    return [
        path for path, document in documents().items()
        if not path.exists() or path.read_text() != render(document)
    ]


def write() -> list[Path]:
    """Write the documents that changed; returns their paths."""
    written = []
    for path, document in documents().items():
        text = render(document)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def _reader(payload: Any):
    """A handler whose only use is to tell FastStream the payload's schema."""

    async def read(event) -> None:  # pragma: no cover - never called
        return None

    read.__annotations__ = {"event": payload, "return": None}
    return read


def _with_headers(document: dict) -> dict:
    schemas = document["components"]["schemas"]
    schemas["CloudEventsHeaders"] = _header_schema(_CLOUDEVENTS_HEADERS)
    schemas["DeadLetterHeaders"] = _header_schema(_CLOUDEVENTS_HEADERS | _DEAD_LETTER_HEADERS)
    for key, message in document["components"]["messages"].items():
        dead_letter = key.split(":")[0].endswith(".dlq")
        message["headers"] = {"$ref": f"#/components/schemas/{'DeadLetter' if dead_letter else 'CloudEvents'}Headers"}
        message["correlationId"] = {"location": "$message.header#/ce_id", "description": "the event_id"}
    return document


def _header_schema(headers: dict[str, dict]) -> dict:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} | spec for name, spec in headers.items()},
        "required": sorted(name for name in headers if name != IMPORTED_HEADER),
    }


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")
