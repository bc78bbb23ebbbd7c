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
