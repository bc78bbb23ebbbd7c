-- One projection per fact (issue 14): the casework view becomes a query over the report's
-- own tables. A case's lifecycle (as intake decided it, carried by its events) joins its
-- row in `notifications`; a deadline's status and working days late join its row in
-- `deadlines`. Existing casework rows move there, then casework_cases and
-- casework_deadlines go.
--
-- The lifecycle columns are the case's current state only: a report as of a moment reads
-- the report's columns (and `notifications_versions`), never these. A case the casework
-- view never saw (a row from before it existed) has no state: the view does not list it,
-- as before, until `sir report rebuild`.
ALTER TABLE {schema}.notifications
    ADD COLUMN state      text,
    ADD COLUMN sog_region text,
    ADD COLUMN responded  boolean NOT NULL DEFAULT false,
    ADD COLUMN imported   boolean NOT NULL DEFAULT false;
UPDATE {schema}.notifications n
SET state = c.state, sog_region = c.sog_region, responded = c.responded, imported = c.imported
FROM {schema}.casework_cases c
WHERE c.case_id = n.case_id;
CREATE INDEX notifications_casework_by_authority ON {schema}.notifications (local_authority, state);
CREATE INDEX notifications_casework_by_region ON {schema}.notifications (sog_region, state)
    WHERE sog_region IS NOT NULL;
CREATE INDEX notifications_casework_by_source ON {schema}.notifications (imported, state);

-- status: services/reporting/domain.py next_status (NULL: a row from before the casework view).
ALTER TABLE {schema}.deadlines
    ADD COLUMN status            text CHECK (status IN ('open', 'warning', 'breached', 'met', 'cancelled')),
    ADD COLUMN working_days_late integer;
ALTER TABLE {schema}.deadlines_versions
    ADD COLUMN status            text,
    ADD COLUMN working_days_late integer;
UPDATE {schema}.deadlines d
SET status = w.status, working_days_late = w.working_days_late
FROM {schema}.casework_deadlines w
WHERE w.case_id = d.case_id AND w.rule = d.rule AND w.started_at = d.started_at;
-- (Both tables were written by one handler in one transaction; should a casework deadline
-- be missing from `deadlines`, it is kept, with its case's authority.)
INSERT INTO {schema}.deadlines
    (case_id, rule, started_at, local_authority, due_at, met_at, breached_at, status, working_days_late)
SELECT w.case_id, w.rule, w.started_at, c.local_authority, w.due_at, w.met_at, w.breached_at, w.status,
       w.working_days_late
FROM {schema}.casework_deadlines w JOIN {schema}.casework_cases c ON c.case_id = w.case_id
ON CONFLICT (case_id, rule, started_at) DO NOTHING;
-- Still owed: open, warned, or breached with no stop event yet.
CREATE INDEX deadlines_owed ON {schema}.deadlines (case_id, due_at)
    WHERE status IN ('open', 'warning') OR (status = 'breached' AND met_at IS NULL);

DROP TABLE {schema}.casework_cases, {schema}.casework_deadlines;
