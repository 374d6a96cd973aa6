-- 0001: modules, tasks, attempts and leader leases, in the store's schema (the connection's
-- search_path). Times are milliseconds since the Unix epoch (UTC), as BIGINT, the precision
-- every fabric store keeps. Ids are compared byte-wise (COLLATE "C") so that text order is
-- creation order whatever the database's collation.

CREATE TABLE modules (
    tenant      TEXT   NOT NULL,
    id          TEXT   NOT NULL,                -- sha256:<hex> of bytes
    name        TEXT,                           -- the name last given with it
    kind        TEXT   NOT NULL CHECK (kind IN ('module', 'component')),
    size        BIGINT NOT NULL CHECK (size >= 0),
    created_at  BIGINT NOT NULL,
    bytes       BYTEA  NOT NULL,                -- so any node can run any task
    PRIMARY KEY (tenant, id)
);

-- A name points at the newest module put under it, per tenant.
CREATE TABLE module_names (
    tenant      TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    module_id   TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name),
    FOREIGN KEY (tenant, module_id) REFERENCES modules (tenant, id)
);

CREATE TABLE tasks (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY, -- time-ordered, 26 characters
    tenant           TEXT     NOT NULL,
    module           TEXT     NOT NULL,
    input            BYTEA    NOT NULL,
    priority         SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 4),
    state            TEXT     NOT NULL CHECK (state IN
                         ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    fuel             BIGINT   NOT NULL CHECK (fuel >= 0),
    memory_bytes     BIGINT   NOT NULL CHECK (memory_bytes >= 0),
    timeout_ms       BIGINT   NOT NULL CHECK (timeout_ms >= 0),
    output_bytes     BIGINT   NOT NULL CHECK (output_bytes >= 0),
    log_bytes        BIGINT   NOT NULL CHECK (log_bytes >= 0),
    max_attempts     BIGINT   NOT NULL CHECK (max_attempts BETWEEN 0 AND 4294967295),
    backoff_ms       BIGINT   NOT NULL CHECK (backoff_ms >= 0),
    max_backoff_ms   BIGINT   NOT NULL CHECK (max_backoff_ms >= 0),
    retry_on         TEXT[]   NOT NULL,        -- outcome names
    idempotency_key  TEXT,
    run_at           BIGINT,
    deadline         BIGINT,
    env              JSONB    NOT NULL,        -- object of strings
    labels           JSONB    NOT NULL,        -- object of strings
    created_at       BIGINT   NOT NULL,
    -- Claim order while queued: enqueued_at + priority * aging step (fabric_store::claim_sort_key).
    -- Kept while running, so a requeued task goes back to its old place in line.
    sort_key         BIGINT,
    started_at       BIGINT,
    finished_at      BIGINT,
    attempt_count    INTEGER  NOT NULL DEFAULT 0, -- counted attempts (requeued ones are deleted)
    current_attempt  TEXT COLLATE "C",            -- the attempt holding the lease while running
    lease_until      BIGINT,
    cancel_requested BOOLEAN  NOT NULL DEFAULT false,
    CONSTRAINT queued_has_sort_key CHECK (state <> 'queued' OR sort_key IS NOT NULL),
    CONSTRAINT scheduled_has_run_at CHECK (state <> 'scheduled' OR run_at IS NOT NULL),
    CONSTRAINT running_is_held CHECK (state <> 'running' OR (current_attempt IS NOT NULL AND lease_until IS NOT NULL)),
    CONSTRAINT only_running_is_held CHECK (state = 'running' OR current_attempt IS NULL)
);

-- A queue table churns: vacuum and analyze it well before the defaults' 20 % of dead rows.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim is an index scan of this partial index in (sort_key, id) order.
CREATE INDEX tasks_claim ON tasks (sort_key, id) WHERE state = 'queued';
CREATE INDEX tasks_scheduled ON tasks (run_at, id) WHERE state = 'scheduled';
CREATE INDEX tasks_lease ON tasks (lease_until, id) WHERE state = 'running';
CREATE INDEX tasks_deadline ON tasks (deadline, id)
    WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled');
CREATE INDEX tasks_finished ON tasks (finished_at, id) WHERE finished_at IS NOT NULL;
-- The fencing token: at most one task is held by an attempt.
CREATE UNIQUE INDEX tasks_current_attempt ON tasks (current_attempt) WHERE current_attempt IS NOT NULL;
CREATE INDEX tasks_tenant ON tasks (tenant, id);
CREATE INDEX tasks_tenant_state ON tasks (tenant, state, id);
CREATE INDEX tasks_state ON tasks (state, id);

CREATE TABLE attempts (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    task_id           TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number            INTEGER NOT NULL CHECK (number >= 1),
    node              TEXT    NOT NULL,
    claimed_at        BIGINT  NOT NULL,
    lease_until       BIGINT,                   -- NULL once ended
    outcome           TEXT,                     -- NULL while running
    exit_code         INTEGER,
    trap              TEXT,
    error             TEXT,
    output            BYTEA,
    stderr            BYTEA,
    output_truncated  BOOLEAN NOT NULL DEFAULT false,
    stderr_truncated  BOOLEAN NOT NULL DEFAULT false,
    fuel_consumed     BIGINT  NOT NULL DEFAULT 0,
    peak_memory_bytes BIGINT  NOT NULL DEFAULT 0,
    wall_ms           BIGINT  NOT NULL DEFAULT 0,
    started_at        BIGINT,
    finished_at       BIGINT,
    UNIQUE (task_id, number)
);

-- Leases that elect one node for a job, such as running the maintenance services.
CREATE TABLE leader_leases (
    name        TEXT   NOT NULL PRIMARY KEY,
    node        TEXT   NOT NULL,
    lease_until BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL                 -- when this node took it (renewals keep it)
);
