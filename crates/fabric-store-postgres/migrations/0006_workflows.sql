-- 0006: workflows. A task may run after other tasks (dependencies) and may be the child of
-- the task whose attempt submitted it.
--
-- * after_ids: the ids it runs after, in the order given (NULL: none); pass_outputs: its
--   input is built from theirs when it becomes ready; parent: the task that submitted it;
--   depth: 0 for a top-level task, its parent's plus one for a child; error: why it ended
--   without an attempt saying so (a dependency that did not succeed). Nullable columns and
--   constant defaults are added without rewriting the table.
-- * task_deps: one row per (dependency, waiting task), so the transaction that ends a task
--   finds the tasks waiting on it by its primary key; rows go with the dependent task.
-- * The new state `waiting` joins the CHECK on tasks.state.
-- * Indexes: the deadline index also holds waiting tasks (they expire too); listings by
--   parent, by module and by labels (containment, GIN) each read an index of their own.

ALTER TABLE tasks ADD COLUMN after_ids TEXT[];
ALTER TABLE tasks ADD COLUMN pass_outputs BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE tasks ADD COLUMN parent TEXT COLLATE "C";
ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0);
ALTER TABLE tasks ADD COLUMN error TEXT;

ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check CHECK (state IN
    ('waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'));

CREATE TABLE task_deps (
    dep_id   TEXT COLLATE "C" NOT NULL,
    task_id  TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (dep_id, task_id)
);
-- For the cascade when a dependent task is pruned.
CREATE INDEX task_deps_task ON task_deps (task_id);

DROP INDEX tasks_deadline;
CREATE INDEX tasks_deadline ON tasks (deadline, id)
    WHERE deadline IS NOT NULL AND state IN ('queued', 'scheduled', 'waiting');
CREATE INDEX tasks_parent ON tasks (parent, id) WHERE parent IS NOT NULL;
CREATE INDEX tasks_module ON tasks (tenant, module, id);
CREATE INDEX tasks_labels ON tasks USING gin (labels jsonb_path_ops);
