-- Bearer tokens: one role and scope each; only a hash of the secret is kept.
CREATE TABLE {schema}.tokens (
    token_id        text PRIMARY KEY,
    secret_sha256   bytea       NOT NULL,
    role            text        NOT NULL CHECK (role IN ('council', 'inspectorate', 'sog', 'admin')),
    local_authority text,
    region          text,
    label           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CHECK ((role = 'council') = (local_authority IS NOT NULL)),
    CHECK ((role = 'sog') = (region IS NOT NULL))
);
