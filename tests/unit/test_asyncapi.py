"""docs/asyncapi.json as a consumer team uses it: one channel per topic, one named message
per event type with an example and its key; the official parser accepts it and the
TypeScript models Modelina generates from it compile under `tsc --strict`."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services import asyncapi
from shared.events import ANY_EVENT, CASE_EVENT_TYPES, DEADLINE_EVENT_TYPES, ROUTING_EVENT_TYPES, event_type_of
from shared.messaging import OUTBOUND_TOPICS, PLATFORM_TOPICS, all_topics, dead_letter_topic

ROOT = Path(__file__).parents[2]
TOOLS = ROOT / "tools/contracts"
ALL_MODELS = (*CASE_EVENT_TYPES, *ROUTING_EVENT_TYPES, *DEADLINE_EVENT_TYPES)


@pytest.fixture(scope="module")
def document() -> dict:
    return asyncapi.document()


def _addresses(channel: dict) -> set[str]:
    """The topics a channel's address stands for, its parameters' values put in."""
    addresses = {channel["address"]}
    for name, parameter in channel.get("parameters", {}).items():
        addresses = {a.replace("{" + name + "}", value) for a in addresses for value in parameter["enum"]}
    return addresses


def test_one_channel_per_topic_with_outbound_and_dead_letters_parameterised(document):
    channels = document["channels"]
    assert len(channels) == len(PLATFORM_TOPICS) + 2
    covered = [address for channel in channels.values() for address in _addresses(channel)]
    assert sorted(covered) == sorted(all_topics())
    assert len(covered) == len(set(covered))
    assert _addresses(channels["outboundNotifications"]) == set(OUTBOUND_TOPICS)
    assert _addresses(channels["deadLetters"]) == {dead_letter_topic(t) for t in PLATFORM_TOPICS}


def test_one_named_message_per_event_type_with_title_summary_example_and_key(document):
    messages = document["components"]["messages"]
    names = [m["name"] for m in messages.values()]
    assert sorted(names) == sorted([event_type_of(m) for m in ALL_MODELS] + ["dead-letter"])
    for message in messages.values():
        assert message["title"] and message["summary"] and message["examples"]
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        assert message["headers"]["$ref"] in ("#/components/schemas/CloudEventsHeaders", "#/components/schemas/DeadLetterHeaders")
    titles = [m["title"] for m in messages.values()]
    assert len(titles) == len(set(titles))


def test_every_example_is_a_valid_event_with_its_cloudevents_headers(document):
    for model in ALL_MODELS:
        [example] = document["components"]["messages"][model.__name__]["examples"]
        event = ANY_EVENT.validate_python(example["payload"])
        assert type(event) is model
        assert example["headers"]["ce_type"] == event.event_type
        assert example["headers"]["ce_id"] == str(event.event_id)
        assert example["headers"]["ce_subject"] == str(event.case_id)


def test_every_channel_message_and_operation_reference_resolves(document):
    def resolve(ref: str) -> dict:
        node = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    for channel in document["channels"].values():
        for message in channel["messages"].values():
            resolve(message["$ref"])
    for operation in document["operations"].values():
        resolve(operation["channel"]["$ref"])


def test_the_dead_letter_headers_are_what_the_consumer_writes(document):
    from aiokafka.structs import ConsumerRecord

    from shared.consumer import dead_letter_headers

    record = ConsumerRecord("sir.case-events.v1", 0, 7, 0, 0, b"k", b"x", None, 1, 1, headers=())
    written = dead_letter_headers("sir-routing:sir.case-events.v1", record, "not a valid event: …")
    schema = document["components"]["schemas"]["DeadLetterHeaders"]
    assert set(schema["required"]) <= set(written) <= set(schema["properties"])


def test_the_parser_accepts_it_and_modelina_models_compile_under_tsc_strict():
    """tools/contracts/check.mjs on the committed document (the contracts test keeps
    that equal to what the code generates)."""
    if shutil.which("node") is None or not (TOOLS / "node_modules/@asyncapi/parser").exists():
        reason = "Node.js is missing" if shutil.which("node") is None else "tools/contracts has no node_modules"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run installs Node.js and `make test` runs `npm ci --prefix tools/contracts`")
        pytest.skip(f"{reason} (`make test` runs `npm ci --prefix tools/contracts` where npm is installed)")
    result = subprocess.run(
        ["node", "check.mjs", str(ROOT / "docs/asyncapi.json")], cwd=TOOLS, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tsc --strict: the generated models compile" in result.stdout
