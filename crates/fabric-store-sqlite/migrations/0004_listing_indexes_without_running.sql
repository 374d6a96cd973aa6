-- 0004: listings by state without index work on the hot path. A claim moved a task's entry in
-- tasks_tenant_state from queued to running, and its completion from running to the end state:
-- four b-tree writes per task. Running tasks are few (at most the workers of the nodes) and
-- tasks_lease already holds every one of them, so listings of running tasks read that index
-- and tasks_tenant_state leaves them out: two writes per task fewer.
--
-- The partial indexes name their states as an OR chain: SQLite can use a partial index only when
-- the query's condition implies its WHERE, and it proves `state = 'failed'` implies an OR chain
-- that contains it, not a `<>` or an IN list. Listings write the state into their SQL.
--
-- tasks_state_rare serves admin listings (every tenant) of the rare end states, which would
-- otherwise scan every task; it is written only when a task fails, is cancelled or expires.

DROP INDEX tasks_tenant_state;

CREATE INDEX tasks_tenant_state ON tasks (tenant, state, id)
    WHERE state = 'queued' OR state = 'scheduled' OR state = 'succeeded' OR state = 'failed'
       OR state = 'cancelled' OR state = 'expired';

CREATE INDEX tasks_state_rare ON tasks (state, id)
    WHERE state = 'failed' OR state = 'cancelled' OR state = 'expired';
