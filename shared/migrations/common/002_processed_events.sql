-- One row per event a consumer has applied, written in the same transaction as the
-- effects, so a redelivered event is recognised and skipped.
CREATE TABLE {schema}.processed_events (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
