-- 0003: a task's directory grants, an object of guest path -> volume name (the names of
-- volumes the operator defined with `fabric serve --volume`; never host paths). Tasks stored
-- before it have none. A constant default adds the column without rewriting the table.

ALTER TABLE tasks ADD COLUMN dirs JSONB NOT NULL DEFAULT '{}'::jsonb;
