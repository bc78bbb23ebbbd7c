"""Benchmark: `sir replay` of the three services' records to a blank broker, beside raw
aiokafka produce of the same messages, both measured in this run.

Writes N stored events straight into a fresh database with COPY (half intake's case
events, a quarter routing's forwarding records, a quarter deadlines' deadline events; the
services are not involved), then:
  1. raw (bench/ceilings.py): one aiokafka producer (the platform's settings) sends the same messages, held in
     memory, to a blank Tansu, a chunk's acknowledgements awaited while the next is queued;
  2. replay: shared.record.replay (what `sir replay` and the automatic restore run) reads
     the records in causal order and publishes them to another blank Tansu.
Prints each one's events/s and the ratio replay / raw (target ≥ 0.5).

    .venv/bin/python bench/replay.py                   # 1,000,000 events
    .venv/bin/python bench/replay.py --events 200000   # a quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg
from ceilings import ratio, raw_produce, report_row
from pipeline import bench_database

from shared import devstack, record
from shared.db import COMMON, create_pool, migrate
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, ROUTING_EVENTS, encode_headers, ensure_topics, new_producer

PARTITIONS = 6
CHUNK = 5000

_ENVELOPE = {
    "event_id": "EVENT_ID", "schema_version": 1, "case_id": "CASE_ID", "local_authority": "glasgow-city",
    "received_at": "2026-11-02T10:00:00Z", "recorded_at": "2026-11-02T10:00:00Z",
    "actor": {"role": "council", "id": "tok_bench"},
}
# (schema, topic, event type, data): one of each kind of stored event.
KINDS = (
    ("intake", CASE_EVENTS, "incident.notified", {
        "council_reference": "BENCH", "incident_date": "2026-11-02", "criterion": "charged_with_serious_offence",
        "incident_type": "serious_assault", "order_type": "community_payback_order", "subject_role": "perpetrator",
        "mappa": {"applies": False}, "domestic_abuse_aggravated": False, "historical": False,
        "signed_off_by": "service_manager"}),
    ("routing", ROUTING_EVENTS, "notification.forwarded", {
        "notification_event_id": "CAUSE_ID", "recipient": "scottish-government", "channel": "topic",
        "attempts": 1, "forwarded_at": "2026-11-02T10:00:01Z"}),
    ("deadlines", DEADLINE_EVENTS, "deadline.opened", {
        "rule": "notification", "sequence": 1, "due": "2026-11-04", "opened_on": "2026-11-02"}),
)
# Of every four events: two intake, one routing, one deadlines.
SHARES = {"intake": 2, "routing": 1, "deadlines": 1}


def messages(count: int) -> dict[str, list[tuple]]:
    """Per schema, the rows to store: (event_id, event_type, topic, key, value, headers)."""
    rows: dict[str, list[tuple]] = {schema: [] for schema, *_ in KINDS}
    templates = {schema: (topic, event_type, json.dumps(_ENVELOPE | {"event_type": event_type, "data": data}))
                 for schema, topic, event_type, data in KINDS}
    cases = max(count // 4, 1)
    for n in range(count):
        schema = ("intake", "intake", "routing", "deadlines")[n % 4]
        topic, event_type, template = templates[schema]
        event_id, case_id = uuid.uuid4(), uuid.UUID(int=n // 4 % cases + 1)
        value = template.replace("EVENT_ID", str(event_id)).replace("CASE_ID", str(case_id)).replace("CAUSE_ID", str(event_id))
        headers = {"ce_specversion": "1.0", "ce_id": str(event_id), "ce_source": f"/sir/{schema}",
                   "ce_type": event_type, "ce_time": "2026-11-02T10:00:00Z", "ce_subject": str(case_id),
                   "content-type": "application/json"}
        rows[schema].append((event_id, event_type, topic, str(case_id).encode(), value.encode(), headers))
    return rows


async def store(database_url: str, rows: dict[str, list[tuple]]) -> float:
    pool = await create_pool(database_url, max_size=2)
    try:
        for schema in rows:
            await migrate(pool, schema, COMMON)
    finally:
        await pool.close()
    # A plain connection: asyncpg's own jsonb codec (text in, binary COPY out).
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        for schema, schema_rows in rows.items():
            await conn.copy_records_to_table(
                "emitted_events", schema_name=schema, records=((*r[:5], json.dumps(r[5])) for r in schema_rows),
                columns=("event_id", "event_type", "topic", "key", "value", "headers"),
            )
            await conn.execute(f"ANALYZE {schema}.emitted_events")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def raw(bootstrap: str, rows: dict[str, list[tuple]]) -> float:
    """The ceiling (bench/ceilings.py raw_produce): the same messages, held in memory, sent
    by one producer with the platform's settings."""
    await ensure_topics(bootstrap, (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS), PARTITIONS)
    messages = ((topic, key, value, encode_headers(headers))
                for schema in ("intake", "routing", "deadlines")
                for _, _, topic, key, value, headers in rows[schema])
    _, seconds = await raw_produce(bootstrap, messages, chunk=CHUNK, producer=new_producer(bootstrap))
    return seconds


async def replay(database_url: str, bootstrap: str) -> tuple[float, int]:
    pool = await create_pool(database_url, max_size=2)
    try:
        started = time.perf_counter()
        count = await record.replay(pool, bootstrap, PARTITIONS, progress=lambda done, total: None)
        return time.perf_counter() - started, count
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    rows = messages(args.events)
    size = sum(len(r[4]) for schema_rows in rows.values() for r in schema_rows)
    with bench_database() as database_url:
        copy_seconds = asyncio.run(store(database_url, rows))
        with devstack.Tansu() as broker:
            raw_seconds = asyncio.run(raw(broker.bootstrap, rows))
        with devstack.Tansu() as broker:
            replay_seconds, replayed = asyncio.run(replay(database_url, broker.bootstrap))
    assert replayed == args.events, (replayed, args.events)
    n = args.events
    print(f"stored events            {n:,} ({', '.join(f'{s} {len(r):,}' for s, r in rows.items())}),"
          f" {size / n:,.0f} bytes each; COPY {n / copy_seconds:,.0f} /s")
    print(f"raw aiokafka produce     {raw_seconds:.1f} s, {n / raw_seconds:,.0f} events/s")
    print(f"replay to a blank Tansu  {replay_seconds:.1f} s, {n / replay_seconds:,.0f} events/s"
          " (causal order, read from PostgreSQL)")
    print(f"ratio replay / raw       {raw_seconds / replay_seconds:.2f} (target ≥ 0.5)")
    report_row(f"sir replay, {n:,} events", f"{n / replay_seconds:,.0f} events/s",
               f"raw aiokafka produce {n / raw_seconds:,.0f} events/s", ratio(n / replay_seconds, n / raw_seconds), "≥ 0.5")


if __name__ == "__main__":
    main()
