-- The event store: the system of record. Kafka only distributes what is here.
CREATE TABLE {schema}.cases (
    case_id         uuid PRIMARY KEY,
    local_authority text        NOT NULL,
    -- where MAPPA applies, the region whose SOG may read the case
    sog_region      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.events (
    position        bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    case_id         uuid        NOT NULL REFERENCES {schema}.cases,
    event_type      text        NOT NULL,
    local_authority text        NOT NULL,
    received_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    -- history brought in by `sir import`: routing must not deliver it again
    imported        boolean     NOT NULL DEFAULT false,
    envelope        jsonb       NOT NULL
);
CREATE INDEX events_by_case ON {schema}.events (case_id, position);

-- Events are never edited or deleted: a correction is a new event.
CREATE FUNCTION {schema}.refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are never edited or deleted; record a correcting event';
END $$;
CREATE TRIGGER events_are_immutable BEFORE UPDATE OR DELETE ON {schema}.events
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_event_change();

-- The first (successful) answer to each Idempotency-Key, per token; refusals change
-- nothing and are not kept.
CREATE TABLE {schema}.idempotency_keys (
    token_id       text        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    response       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);
