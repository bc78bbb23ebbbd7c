"""Routing's SQL: the recipients' channels and the deliveries with their retry schedule.

Times stored here come from the database clock: the delivery loop's from
`clock_timestamp()` (the moment of the statement, so a delivery's latency does not
include the wait of its transaction), the consumer's from the time of its transaction
(the decider's `Context.now`, which the records it emits carry too)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import asyncpg

from services.routing.domain import Deliveries, RecipientConfig

SCHEMA = "routing"
# LISTEN/NOTIFY channel that wakes the delivery loop when a delivery falls due at once.
WAKE_CHANNEL = "routing_deliveries"
_CONFIG_FIELDS = tuple(RecipientConfig.model_fields)
# What the operator API shows of a delivery (never the notification body).
# The incident.notified event a delivery forwards: the cause of its routing records.
_CAUSE = "(notification::jsonb ->> 'event_id')::uuid AS causation_id"
_DELIVERY_COLUMNS = (
    "id, case_id, recipient, local_authority, received_at, status, channel, attempts,"
    " next_attempt_at, last_error, delivered_at, failed_at, created_at"
)


# --- recipients -------------------------------------------------------------------------


async def seed_recipients(conn: asyncpg.Connection | asyncpg.Pool, configs: dict[str, RecipientConfig], source: str) -> None:
    """Give each recipient not yet in the table its configuration from the file."""
    columns = ", ".join(_CONFIG_FIELDS)
    placeholders = ", ".join(f"${i}" for i in range(2, len(_CONFIG_FIELDS) + 2))
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.recipients (recipient, {columns}, updated_by)"
        f" VALUES ($1, {placeholders}, ${len(_CONFIG_FIELDS) + 2}) ON CONFLICT DO NOTHING",
        [(recipient, *config.model_dump().values(), source) for recipient, config in configs.items()],
    )


async def set_recipient(
    conn: asyncpg.Connection | asyncpg.Pool, recipient: str, config: RecipientConfig, by: str
) -> asyncpg.Record:
    columns = ", ".join(_CONFIG_FIELDS)
    placeholders = ", ".join(f"${i}" for i in range(2, len(_CONFIG_FIELDS) + 2))
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _CONFIG_FIELDS)
    return await conn.fetchrow(
        f"INSERT INTO {SCHEMA}.recipients (recipient, {columns}, updated_by)"
        f" VALUES ($1, {placeholders}, ${len(_CONFIG_FIELDS) + 2})"
        f" ON CONFLICT (recipient) DO UPDATE SET {updates}, updated_by = EXCLUDED.updated_by, updated_at = now()"
        " RETURNING *",
        recipient, *config.model_dump().values(), by,
    )


async def recipients(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT * FROM {SCHEMA}.recipients ORDER BY recipient")


# --- deliveries ---------------------------------------------------------------------------


async def load_deliveries(conn: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, Deliveries]:
    """The consumer's loader: the recipients each case owes its notification already, and
    every recipient's channel of the moment, in one query for the batch."""
    rows = await conn.fetch(
        f"SELECT case_id, recipient, NULL::text AS channel FROM {SCHEMA}.deliveries WHERE case_id = ANY($1::uuid[])"
        f" UNION ALL SELECT NULL, recipient, channel FROM {SCHEMA}.recipients",
        case_ids,
    )
    channels = {row["recipient"]: row["channel"] for row in rows if row["case_id"] is None}
    owed: dict[uuid.UUID, set[str]] = {case_id: set() for case_id in case_ids}
    for row in rows:
        if row["case_id"] is not None:
            owed[row["case_id"]].add(row["recipient"])
    return {case_id: Deliveries(frozenset(recipients), (), channels) for case_id, recipients in owed.items()}


async def save_deliveries(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, Deliveries], after: Mapping[uuid.UUID, Deliveries]
) -> None:
    """The consumer's saver: store the deliveries decided, in one statement — those made
    by topic as delivered (at the decision's time, as their records say), the others
    pending and due now — and wake the delivery loop (when the transaction commits) if it
    has one to make. A delivery owed already means the state read was stale: raise, so
    that the batch is applied again (one event at a time, on fresh state)."""
    decided = [
        owing for case_id, state in after.items() for owing in state.decided if owing not in before[case_id].decided
    ]
    if not decided:
        return
    stored = await conn.fetchval(
        f"WITH owed AS (INSERT INTO {SCHEMA}.deliveries (case_id, recipient, local_authority, received_at, notification,"
        "   status, channel, attempts, round_attempts, next_attempt_at, delivered_at)"
        " SELECT c, r, a, t, n, CASE WHEN d IS NULL THEN 'pending' ELSE 'delivered' END,"
        "   CASE WHEN d IS NULL THEN NULL ELSE 'topic' END, (d IS NOT NULL)::int, (d IS NOT NULL)::int,"
        "   CASE WHEN d IS NULL THEN clock_timestamp() END, d"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[])"
        "   AS o(c, r, a, t, n, d)"
        " ON CONFLICT DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM owed",
        [owing.notification.case_id for owing in decided],
        [owing.recipient for owing in decided],
        [owing.notification.local_authority for owing in decided],
        [owing.notification.received_at for owing in decided],
        [owing.notification.model_dump_json() for owing in decided],
        [owing.delivered_at for owing in decided],
    )
    if stored != len(decided):
        raise RuntimeError(f"{len(decided) - stored} of {len(decided)} deliveries were owed already: state read stale")
    if any(owing.delivered_at is None for owing in decided):
        await wake_delivery_loop(conn)


async def wake_delivery_loop(conn: asyncpg.Connection) -> None:
    """Sent when the transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)


async def claim_due(pool: asyncpg.Pool, lease: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    """Take up to `limit` pending deliveries that are due and not leased by another loop,
    each with its recipient's configuration of the moment (`config`, None for a recipient
    not seeded yet), in one statement. The lease lasts twice the recipient's timeout and
    a margin, so a loop that died leaves its rows to the others soon after."""
    return await pool.fetch(
        f"WITH due AS ("
        f"  SELECT d.case_id, d.recipient, coalesce(r.timeout_seconds, 10) * 2 + 10 AS lease_seconds,"
        "          to_jsonb(r) AS config"
        f"    FROM {SCHEMA}.deliveries d LEFT JOIN {SCHEMA}.recipients r USING (recipient)"
        "    WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()"
        "      AND (d.leased_until IS NULL OR d.leased_until < clock_timestamp())"
        "    ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED)"
        f" UPDATE {SCHEMA}.deliveries d"
        "    SET lease = $2, leased_until = clock_timestamp() + make_interval(secs => due.lease_seconds)"
        "   FROM due WHERE d.case_id = due.case_id AND d.recipient = due.recipient"
        " RETURNING d.*, due.config",
        limit, lease,
    )


def claimed_config(row: asyncpg.Record) -> RecipientConfig | None:
    """The recipient's configuration `claim_due` read with a row."""
    config = row["config"]
    return None if config is None else RecipientConfig(**{name: config[name] for name in _CONFIG_FIELDS})


async def release(pool: asyncpg.Pool, lease: uuid.UUID) -> None:
    await pool.execute(
        f"UPDATE {SCHEMA}.deliveries SET lease = NULL, leased_until = NULL WHERE lease = $1 AND status = 'pending'", lease
    )


async def seconds_until_due(pool: asyncpg.Pool) -> float | None:
    """How long until the next pending delivery falls due (or its lease runs out)."""
    return await pool.fetchval(
        "SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at)))"
        f" - clock_timestamp())::float8 FROM {SCHEMA}.deliveries WHERE status = 'pending'"
    )


async def mark_delivered(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, channel: str, lease: uuid.UUID | None
) -> asyncpg.Record | None:
    """Delivered, if still pending (and still held under `lease` when one is given); with
    `recorded_at`, the moment its record is written."""
    return await conn.fetchrow(
        f"UPDATE {SCHEMA}.deliveries SET status = 'delivered', channel = $2, attempts = attempts + 1,"
        " round_attempts = round_attempts + 1, delivered_at = clock_timestamp(), last_error = NULL,"
        " next_attempt_at = NULL, lease = NULL, leased_until = NULL"
        f" WHERE id = $1 AND status = 'pending' AND lease IS NOT DISTINCT FROM $3"
        f" RETURNING *, {_CAUSE}, clock_timestamp() AS recorded_at",
        delivery_id, channel, lease,
    )


async def schedule_retry(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, channel: str, lease: uuid.UUID, retry_at: dt.datetime, error: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"UPDATE {SCHEMA}.deliveries SET channel = $2, attempts = attempts + 1, round_attempts = round_attempts + 1,"
        " next_attempt_at = $4, last_error = $5, lease = NULL, leased_until = NULL"
        " WHERE id = $1 AND status = 'pending' AND lease = $3 RETURNING *",
        delivery_id, channel, lease, retry_at, error,
    )


async def mark_failed(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, channel: str, lease: uuid.UUID, error: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"UPDATE {SCHEMA}.deliveries SET status = 'failed', channel = $2, attempts = attempts + 1,"
        " round_attempts = round_attempts + 1, failed_at = clock_timestamp(), last_error = $4,"
        " next_attempt_at = NULL, lease = NULL, leased_until = NULL"
        f" WHERE id = $1 AND status = 'pending' AND lease = $3 RETURNING *, {_CAUSE}",
        delivery_id, channel, lease, error,
    )


async def retry(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    """An operator's retry of a pending or failed delivery: due now, with a new retry budget."""
    return await conn.fetchrow(
        f"UPDATE {SCHEMA}.deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),"
        " round_attempts = 0, round_started_at = clock_timestamp(), failed_at = NULL"
        " WHERE id = $1 AND status IN ('pending', 'failed') AND notification IS NOT NULL"
        f" RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
    )


async def delivery(conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_DELIVERY_COLUMNS} FROM {SCHEMA}.deliveries WHERE id = $1", delivery_id)


async def deliveries(
    conn: asyncpg.Connection | asyncpg.Pool, case_id: uuid.UUID | None, status: str | None, limit: int = 1000
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM {SCHEMA}.deliveries"
        " WHERE ($1::uuid IS NULL OR case_id = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY received_at, recipient LIMIT $3",
        case_id, status, limit,
    )


async def pending_by_recipient(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        f"SELECT recipient, count(*) AS n FROM {SCHEMA}.deliveries WHERE status = 'pending' GROUP BY recipient"
    )
    return {row["recipient"]: row["n"] for row in rows}
