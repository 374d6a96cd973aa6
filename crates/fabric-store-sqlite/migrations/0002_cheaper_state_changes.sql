-- 0002: cheaper state changes. Every change of a task's state used to rewrite entries of two
-- indexes that only served lookups with cheaper alternatives:
--
-- * tasks_current_attempt: the fence (heartbeat, complete) now finds an attempt's task through
--   the attempts primary key and checks `tasks.current_attempt` on the task row.
-- * tasks_state: stats now read task_counts, a count per (tenant, state, priority) that every
--   write keeps in the same transaction as the change it counts, so stats are O(states) instead
--   of O(tasks).

DROP INDEX tasks_current_attempt;
DROP INDEX tasks_state;

CREATE TABLE task_counts (
    tenant    TEXT    NOT NULL,
    state     TEXT    NOT NULL,
    priority  INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (tenant, state, priority)
) WITHOUT ROWID;

INSERT INTO task_counts (tenant, state, priority, n)
    SELECT tenant, state, priority, count(*) FROM tasks GROUP BY tenant, state, priority;
