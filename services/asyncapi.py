"""The AsyncAPI 3 document of every topic (docs/asyncapi.json), built from the code.

One channel per topic: the three platform topics, `sir.outbound.{recipient}.v1` and
`{topic}.dlq` as parameterised channels. One named message per event type, with a
title, a summary, an example (validated against the event model, so it is a real
event), the CloudEvents headers and the Kafka message binding `key` (the case_id).
Operations say who sends and who receives each channel. Payload schemas are the pydantic
models of shared/events.py; property titles are left out, so code generators name types
after the models rather than after fields ("Event Type" fifteen times).

Checked in `make test` by the official parser and by Modelina + `tsc --strict`
(tools/contracts/check.mjs, tests/unit/test_asyncapi_tools.py).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.consumer import DEAD_LETTER_TYPE
from shared.events import (
    CASE_EVENT_TYPES,
    DEADLINE_EVENT_TYPES,
    ROUTING_EVENT_TYPES,
    Envelope,
    event_type_of,
)
from shared.examples import example_event
from shared.messaging import (
    CASE_EVENTS,
    DEADLINE_EVENTS,
    IMPORTED_HEADER,
    OUTBOUND_TOPICS,
    PLATFORM_TOPICS,
    ROUTING_EVENTS,
    cloudevent_headers,
)
from shared.reference import MAPPA_REGIONS
from shared.settings import SERVICES

# The version of the event contract (CHANGELOG.md): major for a change that breaks a reader.
VERSION = "2.1.0"
# The broker named in the document: docker-compose's; each deployment sets KAFKA_BOOTSTRAP.
DOCUMENTED_BOOTSTRAP = "kafka:9092"
KAFKA_BINDING = "0.5.0"
REF = "#/components/schemas/{model}"

CHANNELS = {
    CASE_EVENTS: "caseEvents",
    ROUTING_EVENTS: "routingEvents",
    DEADLINE_EVENTS: "deadlineEvents",
}
OUTBOUND = "outboundNotifications"
DEAD_LETTERS = "deadLetters"
TOPIC_DESCRIPTIONS = {
    CASE_EVENTS: "Case events of SPEC §3, published by intake from its event store. Key = case_id,"
    " so one case's events stay in one partition; `sequence` numbers them 1, 2, 3 … per case.",
    ROUTING_EVENTS: "Forwarding of notifications to the Scottish Government and the SOGs (SPEC §5), by"
    " routing; imported history's forwarding records, by intake. Key = case_id.",
    DEADLINE_EVENTS: "Deadline events of SPEC §4, by deadlines. Key = case_id.",
}
# What each service writes (through its outbox), beside the dead letters of what it reads.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "intake": (CASE_EVENTS, ROUTING_EVENTS),
    "routing": (ROUTING_EVENTS, OUTBOUND),
    "deadlines": (DEADLINE_EVENTS,),
    "reporting": (),
}
MODELS_OF_TOPIC = {CASE_EVENTS: CASE_EVENT_TYPES, ROUTING_EVENTS: ROUTING_EVENT_TYPES, DEADLINE_EVENTS: DEADLINE_EVENT_TYPES}

SUMMARIES = {
    "incident.notified": "A council notifies the Care Inspectorate of a serious incident: the case begins.",
    "notification.criteria_assessed": "The Inspectorate decides whether the notification meets the SIR criteria.",
    "sog.decision_recorded": "The Strategic Oversight Group records whether a MAPPA SCR takes the case.",
    "review.submitted": "The council submits its review (initial analysis or comprehensive review).",
    "review.additional_info_requested": "The Inspectorate asks the council for more information on a review.",
    "review.additional_info_provided": "The council provides the information asked for.",
    "review.responded": "The Inspectorate responds to the review: concluded, or a comprehensive review required.",
    "case.closed": "The case is closed, with the reason.",
    "notification.forwarded": "Routing delivered the notification to one recipient (topic or webhook).",
    "notification.forward_failed": "Routing gave up delivering the notification to one recipient.",
    "deadline.opened": "A SPEC §4 timescale started for the case.",
    "deadline.warning": "A timescale is about to run out.",
    "deadline.met": "A timescale was met.",
    "deadline.breached": "A timescale ran out before it was met.",
    "deadline.cancelled": "A timescale no longer applies (the case moved on or closed).",
}
_SOURCES = {CASE_EVENTS: "intake", ROUTING_EVENTS: "routing", DEADLINE_EVENTS: "deadlines"}

CLOUDEVENTS_HEADERS = {
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
DEAD_LETTER_HEADERS = {
    "ce_specversion": {"const": "1.0", "description": "the original's; `1.0` if it had none"},
    "ce_id": {"description": "the original's; a new UUID if it had none"},
    "ce_source": {"description": "the original's; /sir/<service> of the consumer that gave up if it had none"},
    "ce_type": {"description": f"the original's; `{DEAD_LETTER_TYPE}` if it had none"},
    "ce_time": {"format": "date-time", "description": "the original's; the dead-lettering time if it had none"},
    "ce_subject": {"description": "the original's (= case_id), absent if it had none"},
    "content-type": {
        "description": "the original's (application/json for the platform's events);"
        " application/octet-stream if it had none",
    },
    IMPORTED_HEADER: {"const": "true", "description": "the original's, if it had one"},
    "dlq_error": {"description": "why the consumer gave up: `not a valid event: …` or `failed N attempts: …`"},
    "dlq_consumer": {"description": "<group id>:<topic> of the consumer that gave up, e.g. sir-routing:sir.case-events.v1"},
    "dlq_source": {"description": "<topic>/<partition>/<offset> of the original record"},
    "dlq_time": {"format": "date-time", "description": "when the consumer gave up"},
}
_DEAD_LETTER_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "content-type",
                         "dlq_error", "dlq_consumer", "dlq_source", "dlq_time")


def document() -> dict:
    all_models = (*CASE_EVENT_TYPES, *ROUTING_EVENT_TYPES, *DEADLINE_EVENT_TYPES)
    _, definitions = models_json_schema([(m, "validation") for m in all_models], ref_template=REF)
    schemas = {name: _untitled_properties(schema) for name, schema in definitions["$defs"].items()}
    schemas["CloudEventsHeaders"] = _header_schema(CLOUDEVENTS_HEADERS, [n for n in CLOUDEVENTS_HEADERS if n != IMPORTED_HEADER])
    schemas["DeadLetterHeaders"] = _header_schema(DEAD_LETTER_HEADERS, _DEAD_LETTER_REQUIRED)
    schemas["DeadLetterPayload"] = {
        "type": "string",
        "description": "The original record's value, byte for byte: usually an event of the topic, or"
        " bytes that are not a valid event (the reason it is here). Read it as bytes.",
    }
    messages = {_message_name(m): _message(m) for m in all_models} | {"DeadLetter": _dead_letter_message()}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "SIR platform topics",
            "version": VERSION,
            "description": "Every topic of the SIR platform (Scotland's justice social work Serious Incident"
            " Review). Each message is the SPEC §3 envelope as JSON with CloudEvents 1.0 binary-mode headers"
            " (Kafka protocol binding); key = case_id. How to read them: docs/consumer-guide.md."
            " Versions: CHANGELOG.md.",
            "license": {"name": "MIT", "url": "https://opensource.org/license/mit"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": DOCUMENTED_BOOTSTRAP,
                "protocol": "kafka",
                "description": "Apache Kafka (docker-compose) or Tansu (`sir up`); each deployment sets KAFKA_BOOTSTRAP.",
            },
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def _channels() -> dict:
    channels = {
        CHANNELS[topic]: {
            "address": topic,
            "title": topic,
            "description": TOPIC_DESCRIPTIONS[topic],
            "messages": {_message_name(m): {"$ref": f"#/components/messages/{_message_name(m)}"} for m in MODELS_OF_TOPIC[topic]},
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING}},
        }
        for topic in PLATFORM_TOPICS
    }
    recipients = sorted(topic.removeprefix("sir.outbound.").removesuffix(".v1") for topic in OUTBOUND_TOPICS)
    channels[OUTBOUND] = {
        "address": "sir.outbound.{recipient}.v1",
        "title": "sir.outbound.{recipient}.v1",
        "description": "Notifications forwarded to one recipient whose channel is `topic` (SPEC §5): the"
        " incident.notified event as intake recorded it (event_id unchanged), ce_source /sir/routing.",
        "parameters": {
            "recipient": {
                "enum": recipients,
                "default": "scottish-government",
                "description": "`scottish-government`, or `sog.<region>` for a MAPPA region's Strategic"
                f" Oversight Group ({len(MAPPA_REGIONS)} regions).",
            },
        },
        "messages": {"IncidentNotified": {"$ref": "#/components/messages/IncidentNotified"}},
    }
    channels[DEAD_LETTERS] = {
        "address": "{topic}.dlq",
        "title": "{topic}.dlq",
        "description": "What a consumer could not apply (not a valid event, or every attempt failed): the"
        " original record, its key and headers unchanged, plus dlq_* headers. Made on first use.",
        "parameters": {
            "topic": {"enum": list(PLATFORM_TOPICS), "description": "the topic the record came from"},
        },
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
    }
    return channels


def _operations() -> dict:
    operations: dict[str, dict] = {}
    for name in SERVICES:
        service = importlib.import_module(f"services.{name}.app").SERVICE
        for target in PUBLISHES[name]:
            channel = CHANNELS.get(target, target)
            operations[f"{name}Sends{channel[0].upper()}{channel[1:]}"] = _operation(
                "send", channel, f"{name} publishes through its outbox (acks=all)."
            )
        for topic in sorted(service.consumes):
            channel = CHANNELS[topic]
            operations[f"{name}Receives{channel[0].upper()}{channel[1:]}"] = _operation(
                "receive", channel, f"{name} applies each event once, in each case's sequence order.",
                group_id=service.group_id,
            )
        if service.consumes:
            operations[f"{name}SendsDeadLetters"] = _operation(
                "send", DEAD_LETTERS, f"{name} dead-letters what it cannot apply (acks=all)."
            )
    return dict(sorted(operations.items()))


def _operation(action: str, channel: str, description: str, group_id: str | None = None) -> dict:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "description": description,
    }
    if group_id:
        operation["bindings"] = {"kafka": {"groupId": {"type": "string", "enum": [group_id]}, "bindingVersion": KAFKA_BINDING}}
    return operation


def _message_name(model: type[Envelope]) -> str:
    return model.__name__


def _message(model: type[Envelope]) -> dict:
    event_type = event_type_of(model)
    example = example_event(model)
    topic = next(t for t, models in MODELS_OF_TOPIC.items() if model in models)
    return {
        "name": event_type,
        "title": event_type.replace("_", " ").replace(".", ": ", 1).capitalize(),
        "summary": SUMMARIES[event_type],
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
        "payload": {"$ref": REF.format(model=model.__name__)},
        "correlationId": {"location": "$message.header#/ce_id", "description": "the event_id"},
        "bindings": _key_binding({"type": "string", "format": "uuid", "description": "the case_id"}),
        "examples": [
            {
                "name": event_type.replace(".", "-").replace("_", "-"),
                "summary": f"{event_type} as on {topic}",
                "headers": cloudevent_headers(example, _SOURCES[topic]),
                "payload": example.model_dump(mode="json"),
            }
        ],
    }


def _dead_letter_message() -> dict:
    return {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A record a consumer could not apply, as it came, with the reason.",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"$ref": "#/components/schemas/DeadLetterPayload"},
        "correlationId": {
            "location": "$message.header#/ce_id",
            "description": "the original's event_id (or the dead letter's own id)",
        },
        "bindings": _key_binding(
            {"type": "string", "description": "the original record's key (the case_id for the platform's events)"}
        ),
        "examples": [
            {
                "name": "not-json",
                "summary": "A record with no CloudEvents headers that is not JSON, dead-lettered by routing",
                "headers": {
                    "ce_specversion": "1.0", "ce_id": "0b8f2a52-3f0c-4d3e-9a38-51f1f9a0c8de", "ce_source": "/sir/routing",
                    "ce_type": DEAD_LETTER_TYPE, "ce_time": "2026-11-20T10:30:01Z", "content-type": "application/octet-stream",
                    "dlq_error": "not a valid event: (message): Invalid JSON: expected value at line 1 column 1",
                    "dlq_consumer": f"sir-routing:{CASE_EVENTS}", "dlq_source": f"{CASE_EVENTS}/2/4711",
                    "dlq_time": "2026-11-20T10:30:01Z",
                },
                "payload": "not json",
            }
        ],
    }


def _key_binding(key: dict) -> dict:
    """The Kafka message binding: what the record's key holds."""
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}}


def _header_schema(headers: dict[str, dict], required) -> dict:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} | spec for name, spec in headers.items()},
        "required": sorted(required),
    }


def _untitled_properties(schema: dict) -> dict:
    """A model's schema without the titles pydantic gives each property ("Event Type"),
    which code generators turn into clashing type names; the model's own title stays."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: _untitled(spec) for name, spec in schema["properties"].items()}
    return schema


def _untitled(spec: Any) -> Any:
    if isinstance(spec, dict):
        return {key: _untitled(value) for key, value in spec.items() if key != "title"}
    if isinstance(spec, list):
        return [_untitled(item) for item in spec]
    return spec
