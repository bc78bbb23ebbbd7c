-- The casework view marks cases whose notification came in imported history (`sir import`),
-- so imported open cases show with their true state and can be filtered (`?source=`).
ALTER TABLE {schema}.casework_cases ADD COLUMN imported boolean NOT NULL DEFAULT false;
CREATE INDEX casework_cases_by_source ON {schema}.casework_cases (imported, state);
