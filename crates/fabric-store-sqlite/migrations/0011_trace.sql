-- 0011: a task's trace context (W3C trace context of the call that submitted it, its own
-- span id and start; see fabric_types::trace::TaskTrace), so that whichever node runs or
-- ends the task reports its spans into the caller's trace. NULL when the task is not
-- traced (tracing off, or not sampled), the common case, which costs a header byte per
-- row; a column without a default changes the schema only, and rows stored before read as
-- not traced.

ALTER TABLE tasks ADD COLUMN trace TEXT;
