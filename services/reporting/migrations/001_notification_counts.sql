-- A first projection: notifications per local authority. The national and quarterly
-- reports build their projections beside it.
CREATE TABLE {schema}.notifications_by_authority (
    local_authority text PRIMARY KEY,
    notifications   integer NOT NULL
);
