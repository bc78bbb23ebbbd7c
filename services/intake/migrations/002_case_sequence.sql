-- The per-case sequence of SPEC §3: case events 1, 2, 3 … per case in commit order,
-- assigned under the case lock (repository.append). Imported notification.forwarded
-- records are stored with their case but are not case events: they have none.
ALTER TABLE {schema}.events ADD COLUMN sequence integer CHECK (sequence >= 1);

-- Events stored before today: numbered by their position, which follows commit order
-- within a case (one case's events are written one at a time under its lock). Their
-- envelopes stay as stored (immutable); readers add the sequence from this column.
ALTER TABLE {schema}.events DISABLE TRIGGER events_are_immutable;
UPDATE {schema}.events e SET sequence = numbered.sequence
  FROM (SELECT position, row_number() OVER (PARTITION BY case_id ORDER BY position) AS sequence
          FROM {schema}.events
         WHERE event_type IN ('incident.notified', 'notification.criteria_assessed', 'sog.decision_recorded',
                              'review.submitted', 'review.additional_info_requested',
                              'review.additional_info_provided', 'review.responded', 'case.closed')) numbered
 WHERE e.position = numbered.position;
ALTER TABLE {schema}.events ENABLE TRIGGER events_are_immutable;

CREATE UNIQUE INDEX events_case_sequence ON {schema}.events (case_id, sequence);
