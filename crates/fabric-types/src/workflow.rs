//! The limits of task workflows: dependencies (`after`) and child tasks submitted by a
//! running agent. Every store and the server enforce these same numbers.

/// The most tasks one task may name in `after`.
pub const MAX_AFTER: usize = 100;

/// The most child tasks one attempt may submit; more refuse the attempt's children.
pub const MAX_CHILDREN_PER_ATTEMPT: usize = 1_000;

/// The deepest a child task may be: a top-level task has depth 0, its children 1, and a
/// task of depth `MAX_TASK_DEPTH` may not have children.
pub const MAX_TASK_DEPTH: u32 = 16;
