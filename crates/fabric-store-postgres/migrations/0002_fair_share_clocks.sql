-- 0002: fair share between tenants. Each (tenant, priority) keeps a virtual clock in
-- milliseconds (see fabric_store::FairClock): a task's first enqueue is keyed at
-- max(ready, clock) and moves the clock on one millisecond, so one tenant's flood does not
-- stand in front of every other tenant's work. An insert batch moves the clocks it needs in
-- one upsert, which locks their rows until it commits, so nodes inserting for one tenant at
-- once take turns on its clock and never hand out the same virtual time twice.
--
-- A task inserted as scheduled now carries its fair sort key while it waits, and its
-- promotion keeps it; a retry waiting as scheduled has none (its promotion keys it at its
-- run_at), as before.

CREATE TABLE fair_clocks (
    tenant   TEXT     NOT NULL,
    priority SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 4),
    clock    BIGINT   NOT NULL,
    PRIMARY KEY (tenant, priority)
);
