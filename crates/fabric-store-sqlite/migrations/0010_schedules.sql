-- 0010: concurrency keys and cron schedules.
--
-- A task's concurrency key and limit (both NULL without a key, the common case: a header
-- byte per row). The partial index holds only running tasks with a key, so a claim counts
-- what runs under a key with an index range and tasks without a key never touch it.
--
-- One row per tenant and schedule name: the cron expression and time zone as given, the
-- TaskSpec to submit (JSON text), the tick that fires next (milliseconds) and the task the
-- last firing created. The firing loop finds due schedules through schedules_due.

ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_limit INTEGER;
CREATE INDEX tasks_concurrency ON tasks (tenant, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;

CREATE TABLE schedules (
    tenant      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    cron        TEXT    NOT NULL,
    timezone    TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_task   TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_run_at);
