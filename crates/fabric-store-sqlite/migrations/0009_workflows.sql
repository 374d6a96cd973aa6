-- 0009: workflows. A task may run after other tasks (dependencies) and may be the child of
-- the task whose attempt submitted it.
--
-- * after_ids: the ids it runs after, a JSON array in the order given (NULL: none);
--   pass_outputs: its input is built from theirs when it becomes ready; parent: the task
--   that submitted it; depth: 0 for a top-level task, its parent's plus one for a child;
--   error: why it ended without an attempt saying so (a dependency that did not succeed).
--   Constant defaults and nullable columns change the schema only: no row is rewritten.
-- * task_deps: one row per (dependency, waiting task), so the transaction that ends a task
--   finds the tasks waiting on it by its primary key; rows go with the dependent task.
-- * The new state `waiting` joins the CHECK on tasks.state, edited in place as 0003 did
--   (an OR chain accepting a superset of the old values, so no stored row can violate it).
-- * Indexes: the deadline index also holds waiting tasks (they expire too); listings by
--   parent, by module, and of waiting tasks each read an index of their own.

ALTER TABLE tasks ADD COLUMN after_ids TEXT;
ALTER TABLE tasks ADD COLUMN pass_outputs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN parent TEXT;
ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN error TEXT;

CREATE TABLE task_deps (
    dep_id   TEXT NOT NULL,
    task_id  TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (dep_id, task_id)
) WITHOUT ROWID;
-- For the cascade when a dependent task is pruned.
CREATE INDEX task_deps_task ON task_deps (task_id);

DROP INDEX tasks_deadline;
-- An OR chain, not an IN list of three (which SQLite evaluates with a temporary b-tree on
-- every write of a task row, as 0003 explains).
CREATE INDEX tasks_deadline ON tasks (deadline, id)
    WHERE deadline IS NOT NULL AND (state = 'queued' OR state = 'scheduled' OR state = 'waiting');
CREATE INDEX tasks_parent ON tasks (parent, id) WHERE parent IS NOT NULL;
CREATE INDEX tasks_module ON tasks (tenant, module, id);
CREATE INDEX tasks_waiting ON tasks (tenant, id) WHERE state = 'waiting';

PRAGMA writable_schema = ON;

UPDATE sqlite_schema
   SET sql = replace(sql,
       'OR state = ''failed'' OR state = ''cancelled'' OR state = ''expired'')',
       'OR state = ''failed'' OR state = ''cancelled'' OR state = ''expired''
                         OR state = ''waiting'')')
 WHERE type = 'table' AND name = 'tasks';

PRAGMA writable_schema = OFF;
