-- 0006: a task's directory grants, a JSON object of guest path -> volume name (the names of
-- volumes the operator defined with `fabric serve --volume`; never host paths). Tasks stored
-- before it have none. A constant default makes this a change of the schema only: no row is
-- rewritten.

ALTER TABLE tasks ADD COLUMN dirs TEXT NOT NULL DEFAULT '{}';
