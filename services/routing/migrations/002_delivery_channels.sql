-- Delivery itself: each recipient's channel (seeded from recipients.toml, changed through
-- PUT /v1/recipients/{recipient}), and on each delivery the notification to forward, its
-- attempts and its retry schedule, kept here so that a schedule survives a restart.
CREATE TABLE {schema}.recipients (
    recipient            text        PRIMARY KEY,
    channel              text        NOT NULL CHECK (channel IN ('topic', 'webhook')),
    url                  text,
    -- The name of the environment variable holding the HMAC secret, never the secret.
    secret_env           text,
    timeout_seconds      float8      NOT NULL,
    max_attempts         integer     NOT NULL,
    horizon_seconds      float8      NOT NULL,
    backoff_base_seconds float8      NOT NULL,
    backoff_max_seconds  float8      NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    updated_by           text        NOT NULL,
    CHECK (channel = 'topic' OR (url IS NOT NULL AND secret_env IS NOT NULL))
);

ALTER TABLE {schema}.deliveries
    ADD COLUMN id               uuid    NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    -- The incident.notified envelope as received: what the recipient gets, byte for byte.
    ADD COLUMN notification     text,
    ADD COLUMN channel          text,
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
    -- Attempts and start of the current round: the retry budget, which an operator's
    -- retry renews (attempts keeps counting every attempt).
    ADD COLUMN round_attempts   integer NOT NULL DEFAULT 0,
    ADD COLUMN round_started_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN next_attempt_at  timestamptz,
    -- A delivery loop's claim: no other loop takes the row until the lease runs out.
    ADD COLUMN leased_until     timestamptz,
    ADD COLUMN lease            uuid,
    ADD COLUMN last_error       text,
    ADD COLUMN delivered_at     timestamptz,
    ADD COLUMN failed_at        timestamptz;

-- Rows written before delivery existed kept no copy of the notification: nothing can be
-- sent for them.
UPDATE {schema}.deliveries
   SET status = 'failed', failed_at = now(), last_error = 'owed before delivery was built; no copy of the notification'
 WHERE status = 'owed';
ALTER TABLE {schema}.deliveries
    ALTER COLUMN status SET DEFAULT 'pending',
    ADD CONSTRAINT deliveries_status CHECK (status IN ('pending', 'delivered', 'failed'));

CREATE INDEX deliveries_due ON {schema}.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_status ON {schema}.deliveries (status, received_at);
