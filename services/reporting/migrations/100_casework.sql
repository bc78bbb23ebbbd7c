-- The casework view (GET /v1/cases): each case's lifecycle state, and the deadlines
-- it owes. Case events and deadline events come on different topics, so either may be
-- seen first: the two tables are joined when read, not linked by a foreign key.
CREATE TABLE {schema}.casework_cases (
    case_id         uuid PRIMARY KEY,
    local_authority text        NOT NULL,
    -- shared.lifecycle.Case, folded from the case's events
    state           text        NOT NULL,
    sog_region      text,
    responded       boolean     NOT NULL DEFAULT false,
    closed_reason   text,
    -- received_at of the case's incident.notified
    notified_at     timestamptz NOT NULL
);
CREATE INDEX casework_cases_by_authority ON {schema}.casework_cases (local_authority, state);
CREATE INDEX casework_cases_by_region ON {schema}.casework_cases (sog_region, state) WHERE sog_region IS NOT NULL;

-- One row per deadline: a rule may start more than once for a case (each review opens
-- an inspectorate_response), and every deadline event carries its started_at.
CREATE TABLE {schema}.casework_deadlines (
    case_id           uuid        NOT NULL,
    rule              text        NOT NULL,
    started_at        timestamptz NOT NULL,
    due_at            timestamptz NOT NULL,
    status            text        NOT NULL CHECK (status IN ('open', 'warning', 'breached', 'met', 'cancelled')),
    met_at            timestamptz,
    breached_at       timestamptz,
    working_days_late integer,
    PRIMARY KEY (case_id, rule, started_at)
);
-- Still owed: open, warned, or breached with no stop event yet.
CREATE INDEX casework_deadlines_owed ON {schema}.casework_deadlines (case_id, due_at)
    WHERE status IN ('open', 'warning') OR (status = 'breached' AND met_at IS NULL);
