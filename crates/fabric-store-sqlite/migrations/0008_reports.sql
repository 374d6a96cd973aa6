-- 0008: what agents report, and what they run with. A task's args (a JSON array of strings)
-- and the progress its current or last attempt reported (a JSON object {done, message, at});
-- each attempt's KPIs (a JSON object of name -> {count, sum, min, max, last}). All are NULL
-- when there is nothing to say, the common case, which costs a header byte per row; columns
-- without a default change the schema only, and rows stored before read as none.
--
-- Two hourly rollups, upserted in the transactions that end attempts, for querying KPIs and
-- billing usage without reading attempts: one row per tenant, module, UTC hour (start, in
-- milliseconds) and KPI name; one row per tenant, module and hour. They are not pruned with
-- tasks (billing outlives task retention). Counts saturate at the largest INTEGER.

ALTER TABLE tasks ADD COLUMN args TEXT;
ALTER TABLE tasks ADD COLUMN progress TEXT;
ALTER TABLE attempts ADD COLUMN kpis TEXT;

CREATE TABLE kpi_hourly (
    tenant  TEXT    NOT NULL,
    module  TEXT    NOT NULL,
    hour    INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    sum     REAL    NOT NULL,
    min     REAL    NOT NULL,
    max     REAL    NOT NULL,
    PRIMARY KEY (tenant, module, hour, name)
) WITHOUT ROWID;
-- The admin view reads every tenant's rows of a time range.
CREATE INDEX kpi_hourly_hour ON kpi_hourly (hour);

CREATE TABLE usage_hourly (
    tenant              TEXT    NOT NULL,
    module              TEXT    NOT NULL,
    hour                INTEGER NOT NULL,
    attempts            INTEGER NOT NULL,
    fuel_consumed       INTEGER NOT NULL,
    wall_ms             INTEGER NOT NULL,
    memory_byte_seconds INTEGER NOT NULL,
    http_requests       INTEGER NOT NULL,
    http_bytes_sent     INTEGER NOT NULL,
    http_bytes_received INTEGER NOT NULL,
    PRIMARY KEY (tenant, module, hour)
) WITHOUT ROWID;
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);
