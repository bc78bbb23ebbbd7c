-- Where each consumer stands in each case's sequence (shared/ordering.py): the highest
-- sequence applied, and the events that came before their turn, held until their
-- predecessors arrive. Held events are in processed_events already (their offsets are
-- committed); they are applied from here.
CREATE TABLE {schema}.case_positions (
    consumer text    NOT NULL,
    case_id  uuid    NOT NULL,
    applied  integer NOT NULL,
    -- {"<sequence>": the record as delivered: topic, partition, offset, timestamp, key,
    --  value (the event's JSON text), headers}
    held     jsonb   NOT NULL DEFAULT '{}',
    PRIMARY KEY (consumer, case_id)
);

-- A consumer that applied case events before they were numbered starts where it stands:
-- for each case, the number of its case events it has processed, counted as intake
-- numbers them (intake/migrations/002: position order, case events only). Where the
-- intake store is not in this database, positions start empty.
DO $$
BEGIN
    IF to_regclass('intake.events') IS NOT NULL THEN
        INSERT INTO {schema}.case_positions (consumer, case_id, applied)
        SELECT p.consumer, numbered.case_id, max(numbered.sequence)
          FROM {schema}.processed_events p
          JOIN (SELECT event_id, case_id, row_number() OVER (PARTITION BY case_id ORDER BY position) AS sequence
                  FROM intake.events
                 WHERE event_type IN ('incident.notified', 'notification.criteria_assessed', 'sog.decision_recorded',
                                      'review.submitted', 'review.additional_info_requested',
                                      'review.additional_info_provided', 'review.responded', 'case.closed')
               ) numbered USING (event_id)
         GROUP BY p.consumer, numbered.case_id;
    END IF;
END $$;
