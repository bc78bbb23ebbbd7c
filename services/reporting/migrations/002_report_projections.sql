-- The projections of the national and quarterly reports (docs/reports.md): one row per
-- thing the report counts, close to the events that made it. Rows are written by
-- services/reporting/handlers.py from the pure functions of domain.py, and by
-- `sir report rebuild` from the same functions in bulk.

-- One row per case: its incident.notified, and what later case events settle about it.
CREATE TABLE {schema}.notifications (
    case_id                   uuid PRIMARY KEY,
    local_authority           text        NOT NULL,
    received_at               timestamptz NOT NULL,
    -- received_at's date in Scotland: the day a report's period is matched against
    received_on               date        NOT NULL,
    incident_date             date        NOT NULL,
    -- shared.calendar.working_days_between(incident_date, received_on)
    working_days_taken        integer     NOT NULL,
    criterion                 text        NOT NULL,
    incident_type             text        NOT NULL,
    order_type                text        NOT NULL,
    subject_role              text        NOT NULL,
    mappa_applies             boolean     NOT NULL,
    mappa_category            smallint,
    mappa_level               smallint,
    domestic_abuse_aggravated boolean     NOT NULL,
    historical                boolean     NOT NULL,
    signed_off_by             text        NOT NULL,
    -- the last day a forward to the Scottish Government is in time (2 working days)
    sg_forward_due_on         date        NOT NULL,
    -- the latest criteria assessment (NULL: not assessed)
    meets_criteria            boolean,
    -- the day the clock of the review now owed started: receipt, or the response that
    -- asked for a comprehensive review
    review_owed_since         date        NOT NULL,
    closed_on                 date,
    closed_reason             text
);
CREATE INDEX notifications_by_received_on ON {schema}.notifications (received_on);

-- One row per review.submitted, with what the Inspectorate did about it.
CREATE TABLE {schema}.reviews (
    review_id                  uuid PRIMARY KEY,  -- the review.submitted event_id
    case_id                    uuid        NOT NULL,
    local_authority            text        NOT NULL,
    received_at                timestamptz NOT NULL,
    received_on                date        NOT NULL,
    review_type                text        NOT NULL,
    signed_off_by              text        NOT NULL,
    reviewer_independent       boolean     NOT NULL,
    risk_assessment_completed  boolean     NOT NULL,
    risk_assessment_up_to_date boolean     NOT NULL,
    risk_tools                 text[]      NOT NULL,
    risk_management_plan_in_place boolean  NOT NULL,
    risk_management_plan_informed boolean  NOT NULL,
    order_reviews_referenced   boolean     NOT NULL,
    good_practice_identified   boolean     NOT NULL,
    findings                   text[]      NOT NULL,
    -- the last day the review was in time (3 calendar months from its clock's start)
    submission_due_on          date        NOT NULL,
    -- the last day a response is in time (1 calendar month from receipt)
    response_due_on            date        NOT NULL,
    info_requests              integer     NOT NULL DEFAULT 0,
    responded_at               timestamptz,
    responded_on               date,
    outcome                    text,
    iar_decision_appropriate   boolean,
    high_quality               boolean
);
CREATE INDEX reviews_by_received_on ON {schema}.reviews (received_on);
CREATE INDEX reviews_by_responded_on ON {schema}.reviews (responded_on) WHERE responded_on IS NOT NULL;
CREATE INDEX reviews_by_case ON {schema}.reviews (case_id, received_at);

-- Deliveries of notifications (sir.routing.v1): the first one to each recipient.
CREATE TABLE {schema}.forwards (
    case_id         uuid        NOT NULL,
    recipient       text        NOT NULL,
    local_authority text        NOT NULL,
    delivered_at    timestamptz NOT NULL,
    delivered_on    date        NOT NULL,
    PRIMARY KEY (case_id, recipient)
);

-- Deadlines (sir.deadlines.v1), for the quarterly report's overdue items and breaches.
CREATE TABLE {schema}.deadlines (
    case_id         uuid        NOT NULL,
    rule            text        NOT NULL,
    started_at      timestamptz NOT NULL,
    local_authority text        NOT NULL,
    due_at          timestamptz NOT NULL,
    met_at          timestamptz,
    breached_at     timestamptz,
    cancelled_at    timestamptz,
    PRIMARY KEY (case_id, rule, started_at)
);
CREATE INDEX deadlines_by_due_at ON {schema}.deadlines (due_at);

-- 001's running count becomes a view over the notifications, so there is one count.
DROP TABLE {schema}.notifications_by_authority;
CREATE VIEW {schema}.notifications_by_authority AS
    SELECT local_authority, count(*)::integer AS notifications
    FROM {schema}.notifications GROUP BY local_authority;
