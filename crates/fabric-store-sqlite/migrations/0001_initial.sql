-- 0001: modules, tasks and attempts. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE modules (
    tenant      TEXT    NOT NULL,
    id          TEXT    NOT NULL,               -- sha256:<hex> of bytes
    name        TEXT,                           -- the name last given with it
    kind        TEXT    NOT NULL CHECK (kind IN ('module', 'component')),
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    bytes       BLOB    NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- A name points at the newest module put under it, per tenant.
CREATE TABLE module_names (
    tenant      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    module_id   TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name),
    FOREIGN KEY (tenant, module_id) REFERENCES modules (tenant, id)
) WITHOUT ROWID;

CREATE TABLE tasks (
    id               TEXT    NOT NULL PRIMARY KEY, -- time-ordered, 26 characters
    tenant           TEXT    NOT NULL,
    module           TEXT    NOT NULL,
    input            BLOB    NOT NULL,
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
    state            TEXT    NOT NULL CHECK (state IN
                         ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    fuel             INTEGER NOT NULL,
    memory_bytes     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    output_bytes     INTEGER NOT NULL,
    log_bytes        INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    backoff_ms       INTEGER NOT NULL,
    max_backoff_ms   INTEGER NOT NULL,
    retry_on         TEXT    NOT NULL,             -- comma-separated outcome names
    idempotency_key  TEXT,
    run_at           INTEGER,
    deadline         INTEGER,
    env              TEXT    NOT NULL,             -- JSON object of strings
    labels           TEXT    NOT NULL,             -- JSON object of strings
    created_at       INTEGER NOT NULL,
    -- Claim order while queued: enqueued_at + priority * aging step (see fabric_store::claim_sort_key).
    sort_key         INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    attempt_count    INTEGER NOT NULL DEFAULT 0,   -- counted attempts (requeued ones are deleted)
    current_attempt  TEXT,                         -- the attempt holding the lease while running
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_claim ON tasks (sort_key, id) WHERE state = 'queued';
CREATE INDEX tasks_scheduled ON tasks (run_at, id) WHERE state = 'scheduled';
CREATE INDEX tasks_lease ON tasks (lease_until, id) WHERE state = 'running';
CREATE INDEX tasks_deadline ON tasks (deadline, id)
    WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled');
CREATE INDEX tasks_finished ON tasks (finished_at, id) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_current_attempt ON tasks (current_attempt) WHERE current_attempt IS NOT NULL;
CREATE INDEX tasks_tenant ON tasks (tenant, id);
CREATE INDEX tasks_tenant_state ON tasks (tenant, state, id);
-- For stats. The hot queries name their partial index (INDEXED BY), so the planner never
-- prefers this broader one (without ANALYZE it would, and sort or scan every row of a state).
CREATE INDEX tasks_state ON tasks (state, priority);

CREATE TABLE attempts (
    id                TEXT    NOT NULL PRIMARY KEY,
    task_id           TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    node              TEXT    NOT NULL,
    claimed_at        INTEGER NOT NULL,
    lease_until       INTEGER,                      -- NULL once ended
    outcome           TEXT,                         -- NULL while running
    exit_code         INTEGER,
    trap              TEXT,
    error             TEXT,
    output            BLOB,
    stderr            BLOB,
    output_truncated  INTEGER NOT NULL DEFAULT 0,
    stderr_truncated  INTEGER NOT NULL DEFAULT 0,
    fuel_consumed     INTEGER NOT NULL DEFAULT 0,
    peak_memory_bytes INTEGER NOT NULL DEFAULT 0,
    wall_ms           INTEGER NOT NULL DEFAULT 0,
    started_at        INTEGER,
    finished_at       INTEGER,
    UNIQUE (task_id, number)
);
