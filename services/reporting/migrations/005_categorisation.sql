-- Categorisation quality (issue 16): incident.notified schema version 2 lets
-- domestic_abuse_aggravated be not known (NULL), and each notification keeps what it left
-- missing or vague (shared.categorisation.gaps). Rows written before this migration have
-- no gaps until `sir report rebuild`.
ALTER TABLE {schema}.notifications ALTER COLUMN domestic_abuse_aggravated DROP NOT NULL;
ALTER TABLE {schema}.notifications_versions ALTER COLUMN domestic_abuse_aggravated DROP NOT NULL;
ALTER TABLE {schema}.notifications ADD COLUMN categorisation_gaps text[] NOT NULL DEFAULT '{}';
ALTER TABLE {schema}.notifications_versions ADD COLUMN categorisation_gaps text[] NOT NULL DEFAULT '{}';
