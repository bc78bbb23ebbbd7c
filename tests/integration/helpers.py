"""Waiting on the platform's asynchronous effects and reading topics with plain aiokafka."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client import REGISTRY


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 30.0, what: str = "condition"):
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def find_records(
    bootstrap: str, topic: str, match: Callable[[ConsumerRecord], bool], count: int = 1, timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Read `topic` from its start (no consumer group) until `count` records match."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                found += [r for records in batches.values() for r in records if match(r)]
    except TimeoutError:
        raise AssertionError(f"found {len(found)} of {count} records on {topic} in {timeout}s") from None
    finally:
        await consumer.stop()
    return found


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None


def metric_value(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Service:
    """One service's process that a test starts itself, on a port of its own, with its log."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
