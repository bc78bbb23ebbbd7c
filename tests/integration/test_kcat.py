"""A case event read with `kcat` (Debian's package), as docs/consumer-guide.md shows.

Debian's kcat 1.7.1 is built on librdkafka 2.0.2, which cannot parse the top-level
tagged fields of Tansu's ApiVersions v3 answer ("Read underflow"), so on Tansu the test
puts a small proxy in front of its own broker that drops those (optional) fields; the
broker advertises the proxy, so every connection goes through it. On Apache Kafka kcat
connects directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import struct
import subprocess

import pytest

from shared.auth import issue_token
from shared.devstack import free_port, port_open, tansu_binary
from shared.messaging import CASE_EVENTS
from tests.factories import notification
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import find_records, header

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")

API_VERSIONS = 18


async def test_kcat_reads_a_case_event_with_its_cloudevents_headers(infra):
    async with _broker_kcat_reads(infra) as bootstrap:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=bootstrap)
        async with run_services(settings, ["intake"]) as platform:
            token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
            answer = await platform.clients["intake"].post(
                "/v1/notifications", json=notification(), headers=bearer(token)
            )
            case_id, event_id = answer.json()["case_id"], answer.json()["event_id"]
            await find_records(bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == event_id)

        kcat = await asyncio.create_subprocess_exec(
            "kcat", "-b", bootstrap, "-C", "-t", CASE_EVENTS, "-o", "beginning", "-e", "-J", "-q",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(kcat.communicate(), timeout=60)
    assert kcat.returncode == 0, err.decode()

    [message] = [m for m in map(json.loads, out.decode().splitlines()) if m["key"] == case_id]
    # kcat -J lists the headers as [name, value, name, value, ...]
    headers = dict(zip(message["headers"][::2], message["headers"][1::2], strict=True))
    event = json.loads(message["payload"])
    assert headers == {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": "/sir/intake",
        "ce_type": "incident.notified",
        "ce_time": event["recorded_at"].replace("+00:00", "Z"),
        "ce_subject": case_id,
        "content-type": "application/json",
    }
    assert event["event_id"] == event_id and event["data"]["incident_type"] == "serious_assault"


@contextlib.asynccontextmanager
async def _broker_kcat_reads(infra):
    if infra.tansu is None:  # Apache Kafka (containers) or a broker named by KAFKA_BOOTSTRAP
        yield infra.bootstrap
        return
    proxy_port, tansu_port = free_port(), free_port()
    server = await asyncio.start_server(
        functools.partial(_relay, upstream=("127.0.0.1", tansu_port)), "127.0.0.1", proxy_port
    )
    tansu = await asyncio.to_thread(
        subprocess.Popen,
        [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            if port_open(tansu_port) or tansu.poll() is not None:
                break
            await asyncio.sleep(0.02)
        assert port_open(tansu_port), "tansu did not start"
        yield f"127.0.0.1:{proxy_port}"
    finally:
        tansu.terminate()
        tansu.wait(10)
        server.close()


async def _relay(client_reader, client_writer, upstream) -> None:
    """Pass Kafka frames both ways, dropping the tagged fields of ApiVersions v3+ answers."""
    broker_reader, broker_writer = await asyncio.open_connection(*upstream)
    api_versions: set[int] = set()  # correlation ids of ApiVersions v3+ requests

    async def requests():
        while True:
            frame = await _read_frame(client_reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[4:12])
            if api_key == API_VERSIONS and version >= 3:
                api_versions.add(correlation)
            broker_writer.write(frame)
            await broker_writer.drain()

    async def responses():
        while True:
            frame = await _read_frame(broker_reader)
            correlation = struct.unpack(">i", frame[4:8])[0]
            if correlation in api_versions:
                api_versions.discard(correlation)
                frame = _without_top_level_tags(frame)
            client_writer.write(frame)
            await client_writer.drain()

    tasks = [asyncio.create_task(requests()), asyncio.create_task(responses())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_writer, broker_writer):
            writer.close()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


def _without_top_level_tags(frame: bytes) -> bytes:
    # ApiVersions v3 answer: correlation id, error code, compact array of (key, min, max,
    # tags), throttle time, then the top-level tags that are dropped here.
    body = frame[4:]
    position = 4 + 2
    entries, position = _uvarint(body, position)
    for _ in range(entries - 1):
        position += 6
        position = _skip_tags(body, position)
    position += 4
    body = body[:position] + b"\x00"
    return struct.pack(">i", len(body)) + body


def _skip_tags(body: bytes, position: int) -> int:
    count, position = _uvarint(body, position)
    for _ in range(count):
        _, position = _uvarint(body, position)
        size, position = _uvarint(body, position)
        position += size
    return position


def _uvarint(body: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = body[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
