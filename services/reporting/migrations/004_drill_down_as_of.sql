-- Drill-down and "as known then" (docs/reports.md, issue 16).
-- Each projection row says since when the platform knew it (`recorded_from`: the
-- recorded_at of the event that made this version of the row), and the version a later
-- event replaced is kept in `<table>_versions` with the moment it stopped being current
-- (`recorded_to`). A report as of a moment reads the rows current then: the current rows
-- recorded by it, and the replaced ones whose span covers it. Rows written before this
-- migration have no `recorded_from` (known since ever) until `sir report rebuild`.
ALTER TABLE {schema}.notifications ADD COLUMN council_reference text;
ALTER TABLE {schema}.notifications ADD COLUMN recorded_from timestamptz;
ALTER TABLE {schema}.reviews ADD COLUMN recorded_from timestamptz;
ALTER TABLE {schema}.forwards ADD COLUMN recorded_from timestamptz;
ALTER TABLE {schema}.deadlines ADD COLUMN recorded_from timestamptz;

CREATE TABLE {schema}.notifications_versions (LIKE {schema}.notifications);
ALTER TABLE {schema}.notifications_versions ADD COLUMN recorded_to timestamptz NOT NULL;
CREATE INDEX notifications_versions_by_received_on ON {schema}.notifications_versions (received_on);

CREATE TABLE {schema}.reviews_versions (LIKE {schema}.reviews);
ALTER TABLE {schema}.reviews_versions ADD COLUMN recorded_to timestamptz NOT NULL;
CREATE INDEX reviews_versions_by_received_on ON {schema}.reviews_versions (received_on);
CREATE INDEX reviews_versions_by_responded_on ON {schema}.reviews_versions (responded_on)
    WHERE responded_on IS NOT NULL;
CREATE INDEX reviews_versions_by_case ON {schema}.reviews_versions (case_id);

CREATE TABLE {schema}.forwards_versions (LIKE {schema}.forwards);
ALTER TABLE {schema}.forwards_versions ADD COLUMN recorded_to timestamptz NOT NULL;
CREATE INDEX forwards_versions_by_case ON {schema}.forwards_versions (case_id, recipient);

CREATE TABLE {schema}.deadlines_versions (LIKE {schema}.deadlines);
ALTER TABLE {schema}.deadlines_versions ADD COLUMN recorded_to timestamptz NOT NULL;
CREATE INDEX deadlines_versions_by_due_at ON {schema}.deadlines_versions (due_at);
