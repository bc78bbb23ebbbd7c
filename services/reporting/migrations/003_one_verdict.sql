-- The one verdict (SPEC §4, shared.calendar.judge): a forward to the Scottish Government
-- is in time when delivered before its breach moment, the start of the next working day
-- after the second working day from receipt. The projection keeps that moment.
-- Rows written before this migration keep the old end of the last day (a forward
-- delivered on a weekend or holiday directly after it still counts late there);
-- `sir report rebuild` recomputes them by the one verdict.
ALTER TABLE {schema}.notifications RENAME COLUMN sg_forward_due_on TO sg_forward_due_at;
ALTER TABLE {schema}.notifications ALTER COLUMN sg_forward_due_at TYPE timestamptz
    USING ((sg_forward_due_at + 1)::timestamp AT TIME ZONE 'Europe/London');
