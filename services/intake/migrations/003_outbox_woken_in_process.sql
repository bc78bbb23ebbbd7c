-- Intake's HTTP writes wake the outbox relay of their own process (shared/outbox.py
-- OutboxRelay.wake) and tell this trigger so, for their transaction only
-- (repository.append: set_config('sir.outbox_woken_in_process', 'on', true)): no NOTIFY.
-- A NOTIFY takes a lock on the cluster's notification queue at commit, which serialises
-- every notifying commit: under load it held intake to a third of what the same writes
-- commit at without it. Every other writer (sir import, a service without its relay)
-- still notifies, and a relay polls besides.
CREATE OR REPLACE FUNCTION {schema}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('sir.outbox_woken_in_process', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('{schema}_outbox', '');
    RETURN NULL;
END $$;
