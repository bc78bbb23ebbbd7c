-- The queue's rows no longer check their position against the record with a foreign key.
-- Every queue row is made from a record row that exists and is never deleted (the record
-- refuses UPDATE, DELETE and TRUNCATE, 003_event_record.sql): from the RETURNING of the
-- statement that inserts the record row (shared/outbox.py enqueue_serialised, intake's
-- repository.append) or from a parked row, which keeps its own foreign key to the record
-- (`sir outbox retry`). The check guarded nothing those statements do not, and was a
-- sixth of the database's time an event of a history import (issue 15: 7.8 ms of 1,200 events).
ALTER TABLE {schema}.outbox DROP CONSTRAINT IF EXISTS outbox_position_fkey;
