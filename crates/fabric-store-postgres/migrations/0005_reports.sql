-- 0005: what agents report, and what they run with. A task's args (a JSON array of strings)
-- and the progress its current or last attempt reported ({done, message, at}); each
-- attempt's KPIs (name -> {count, sum, min, max, last}). All are NULL when there is nothing
-- to say, the common case (a bit in the null bitmap); nullable columns without a default are
-- added without rewriting the tables, and rows stored before read as none.
--
-- Two hourly rollups, upserted (ON CONFLICT, so concurrent nodes add up) in the
-- transactions that end attempts, for querying KPIs and billing usage without reading
-- attempts: one row per tenant, module, UTC hour (start, in milliseconds) and KPI name; one
-- row per tenant, module and hour. They are not pruned with tasks (billing outlives task
-- retention). Counts saturate at the largest BIGINT, sums at the largest finite double.

ALTER TABLE tasks ADD COLUMN args JSONB;
ALTER TABLE tasks ADD COLUMN progress JSONB;
ALTER TABLE attempts ADD COLUMN kpis JSONB;

CREATE TABLE kpi_hourly (
    tenant  TEXT             NOT NULL,
    module  TEXT             NOT NULL,
    hour    BIGINT           NOT NULL,
    name    TEXT             NOT NULL,
    count   BIGINT           NOT NULL CHECK (count >= 0),
    sum     DOUBLE PRECISION NOT NULL,
    min     DOUBLE PRECISION NOT NULL,
    max     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, module, hour, name)
);
-- The admin view reads every tenant's rows of a time range.
CREATE INDEX kpi_hourly_hour ON kpi_hourly (hour);

CREATE TABLE usage_hourly (
    tenant              TEXT   NOT NULL,
    module              TEXT   NOT NULL,
    hour                BIGINT NOT NULL,
    attempts            BIGINT NOT NULL CHECK (attempts >= 0),
    fuel_consumed       BIGINT NOT NULL CHECK (fuel_consumed >= 0),
    wall_ms             BIGINT NOT NULL CHECK (wall_ms >= 0),
    memory_byte_seconds BIGINT NOT NULL CHECK (memory_byte_seconds >= 0),
    http_requests       BIGINT NOT NULL CHECK (http_requests >= 0),
    http_bytes_sent     BIGINT NOT NULL CHECK (http_bytes_sent >= 0),
    http_bytes_received BIGINT NOT NULL CHECK (http_bytes_received >= 0),
    PRIMARY KEY (tenant, module, hour)
);
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);
