-- What each recipient is owed: one row per case and recipient. Delivery itself (topic or
-- webhook channel, retries, records) builds on this.
CREATE TABLE {schema}.deliveries (
    case_id         uuid        NOT NULL,
    recipient       text        NOT NULL,
    local_authority text        NOT NULL,
    received_at     timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'owed',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, recipient)
);
