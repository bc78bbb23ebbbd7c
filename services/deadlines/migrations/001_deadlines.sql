-- Deadlines each case owes. The full engine (every rule, warnings, breaches) builds on this.
CREATE TABLE {schema}.deadlines (
    case_id         uuid        NOT NULL,
    rule            text        NOT NULL,
    local_authority text        NOT NULL,
    started_at      timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'open',
    PRIMARY KEY (case_id, rule)
);
