-- Every event the service emits, kept for good (issue 11). `emitted_events` is the
-- record: appended in the same transaction as the state change, never updated or
-- deleted. `outbox` becomes the queue of what the relay has still to publish: one row
-- per waiting event, pointing into the record and deleted once the broker acknowledged
-- it (the event itself stays). Why a queue and not a cursor over the record: positions
-- come from a sequence, whose order is not commit order, so a cursor "position > last
-- published" could skip a row that committed after a later one; a queue row is found
-- whenever it commits. `sir replay` and the automatic restore read the record.
ALTER TABLE {schema}.outbox RENAME TO outbox_002;
DROP TRIGGER outbox_notify ON {schema}.outbox_002;

CREATE TABLE {schema}.emitted_events (
    position   bigserial PRIMARY KEY,
    event_id   uuid        NOT NULL,
    event_type text        NOT NULL,
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION {schema}.refuse_emitted_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'emitted events are never edited or deleted';
END $$;
CREATE TRIGGER emitted_events_are_immutable BEFORE UPDATE OR DELETE ON {schema}.emitted_events
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_emitted_event_change();
CREATE TRIGGER emitted_events_are_not_truncated BEFORE TRUNCATE ON {schema}.emitted_events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_emitted_event_change();

-- Intake's published events survive only in its event store: bring them into the record
-- first (they were published before anything still waiting), in store order.
DO $$
BEGIN
    IF to_regclass('{schema}.events') IS NOT NULL THEN
        INSERT INTO {schema}.emitted_events (event_id, event_type, topic, key, value, headers, created_at)
        SELECT e.event_id, e.event_type,
               CASE WHEN e.event_type LIKE 'notification.forward%' THEN 'sir.routing.v1' ELSE 'sir.case-events.v1' END,
               convert_to(e.case_id::text, 'UTF8'), convert_to(e.envelope::text, 'UTF8'),
               CASE WHEN e.imported THEN '{"ce_sirimported": "true"}'::jsonb ELSE '{}'::jsonb END
               || jsonb_build_object(
                   'ce_specversion', '1.0', 'ce_id', e.event_id::text, 'ce_source', '/sir/intake',
                   'ce_type', e.event_type, 'ce_time', e.envelope->>'recorded_at',
                   'ce_subject', e.case_id::text, 'content-type', 'application/json'),
               e.recorded_at
        FROM {schema}.events e
        WHERE NOT EXISTS (SELECT 1 FROM {schema}.outbox_002 o WHERE o.headers->>'ce_id' = e.event_id::text)
        ORDER BY e.position;
    END IF;
END $$;

CREATE TABLE {schema}.outbox (
    position   bigint      PRIMARY KEY REFERENCES {schema}.emitted_events,
    created_at timestamptz NOT NULL DEFAULT now()
);

WITH carried AS (
    INSERT INTO {schema}.emitted_events (event_id, event_type, topic, key, value, headers, created_at)
    SELECT (headers->>'ce_id')::uuid, coalesce(headers->>'ce_type', 'unknown'), topic, key, value, headers, created_at
    FROM {schema}.outbox_002 ORDER BY id
    RETURNING position, created_at
)
INSERT INTO {schema}.outbox (position, created_at) SELECT position, created_at FROM carried;
DROP TABLE {schema}.outbox_002;

CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.outbox_notify();

-- Rows the broker refused for good (too large, invalid topic, corrupt): taken out of the
-- queue so the rest keeps flowing, kept here with the error until an operator decides
-- (`sir outbox retry` puts the event back in the queue; `discard` records that it is not
-- to be published). The event itself stays in `emitted_events` either way.
CREATE TABLE {schema}.outbox_parked (
    id         bigserial   PRIMARY KEY,
    position   bigint      NOT NULL REFERENCES {schema}.emitted_events,
    error      text        NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    decision   text        CHECK (decision IN ('retried', 'discarded')),
    decided_at timestamptz
);
CREATE INDEX outbox_parked_waiting ON {schema}.outbox_parked (position) WHERE decision IS NULL;
CREATE INDEX outbox_parked_by_position ON {schema}.outbox_parked (position);
