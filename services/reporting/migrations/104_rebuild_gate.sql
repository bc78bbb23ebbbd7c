-- The gate between the reports and `sir report rebuild` (repository.hold_off_rebuild,
-- shut_out_reports): no rows, only its lock. A report locks it (ACCESS SHARE) before it
-- takes its snapshot and holds it to its end; the rebuild locks it (ACCESS EXCLUSIVE)
-- before it empties any projection. So a report's snapshot is taken either before the
-- rebuild begins (which then waits for it) or after the rebuild commits: never between.
-- The rebuild empties the projections with TRUNCATE, which is not MVCC-safe: a snapshot
-- taken before its commit would find them empty once it touched them after.
-- A table of its own, not the projections: a report reads them on several connections,
-- and those would queue behind a rebuild waiting for the report's first one.
CREATE TABLE {schema}.rebuild_gate ();
