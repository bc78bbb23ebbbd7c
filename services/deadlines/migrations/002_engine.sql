-- The deadlines engine (issue 3): every rule of SPEC §4, warnings, breaches, history.
-- 001's table held only review_submission and no data worth keeping: it is replaced.
DROP TABLE {schema}.deadlines;

-- What the API needs to know of a case to answer who may read it.
CREATE TABLE {schema}.cases (
    case_id         uuid PRIMARY KEY,
    local_authority text NOT NULL,
    sog_region      text            -- the region whose SOG the case is routed to, if MAPPA applies
);
CREATE INDEX cases_sog_region ON {schema}.cases (sog_region) WHERE sog_region IS NOT NULL;

CREATE TABLE {schema}.deadlines (
    case_id           uuid        NOT NULL,
    rule              text        NOT NULL,
    sequence          integer     NOT NULL,  -- 1, 2, … for a rule that starts again in one case
    local_authority   text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('open', 'met', 'breached', 'cancelled')),
    -- false for history: never warned or breached by the scheduler, settled by events only
    watched           boolean     NOT NULL,
    imported          boolean     NOT NULL,
    started_at        timestamptz NOT NULL,
    due_at            timestamptz NOT NULL,
    warn_at           timestamptz,
    -- when the scheduler next looks at it (the warning, then the due time); NULL once it
    -- has nothing more to emit, or when not watched
    next_fire_at      timestamptz,
    warned_at         timestamptz,
    breached_at       timestamptz,
    met_at            timestamptz,
    cancelled_at      timestamptz,
    working_days_late integer,
    opened_by         uuid        NOT NULL,  -- the event that started it
    opened_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, rule, sequence),
    CHECK (next_fire_at IS NULL OR (status = 'open' AND watched))
);
-- The scheduler's claim: due rows, oldest first.
CREATE INDEX deadlines_next_fire ON {schema}.deadlines (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX deadlines_status_rule ON {schema}.deadlines (status, rule);
CREATE INDEX deadlines_authority ON {schema}.deadlines (local_authority, status);

-- A stop that came before its start (a forwarding on sir.routing.v1 read before the
-- notification on sir.case-events.v1): kept until the deadline opens, then it meets it.
CREATE TABLE {schema}.early_stops (
    case_id    uuid        NOT NULL,
    rule       text        NOT NULL,
    event_id   uuid        NOT NULL,
    stopped_at timestamptz NOT NULL,
    imported   boolean     NOT NULL,
    PRIMARY KEY (case_id, rule, event_id)
);
