-- 0005: fair share between tenants. Each (tenant, priority) keeps a virtual clock in
-- milliseconds (see fabric_store::FairClock): a task's first enqueue is keyed at
-- max(ready, clock) and moves the clock on one millisecond, so one tenant's flood does not
-- stand in front of every other tenant's work. Read and written once per insert batch.
--
-- A task inserted as scheduled now carries its fair sort key while it waits, and its
-- promotion keeps it; a retry waiting as scheduled has none (its promotion keys it at its
-- run_at). Scheduled retries written before this migration kept the key of their last claim:
-- clear it so that they still join at their run_at.

CREATE TABLE fair_clocks (
    tenant   TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    clock    INTEGER NOT NULL,
    PRIMARY KEY (tenant, priority)
) WITHOUT ROWID;

UPDATE tasks SET sort_key = NULL WHERE state = 'scheduled';
