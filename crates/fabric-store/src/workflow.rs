//! The rules of task workflows, in one place for every backend: which state a task with
//! dependencies (`after`) starts in and moves to, the input a `pass_outputs` task gets, and
//! how the children an attempt submitted are checked, refused and named. Backends keep only
//! the SQL that finds the rows and applies these decisions.
//!
//! **Dependencies.** A task names up to [`MAX_AFTER`] tasks of its tenant in `after`
//! (stored ones, or ones earlier in its insert batch, so cycles cannot be built). It starts
//! `waiting` while one of them is unfinished; `queued` (or `scheduled`, for a `run_at` in
//! the future) when all already succeeded; `cancelled` at once, with no attempt and its
//! `error` naming the dependency, when one already ended `failed`, `cancelled` or
//! `expired`. In the transaction that ends a task, each task waiting on it moves on the
//! same way ([`readiness`]); a cancelled dependent ends its own dependents in turn.
//!
//! **Children.** See [`Completion`](crate::Completion): they are inserted with the
//! completion that succeeds, or refused as a whole ([`refused_attempt`]).

use fabric_types::workflow::{MAX_AFTER, MAX_CHILDREN_PER_ATTEMPT, MAX_TASK_DEPTH};
use fabric_types::{Attempt, Outcome, TaskState};
use serde_json::{Map, Value};

use crate::{NewTask, StoreError, TaskId};

/// Where a task with dependencies stands, given their states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every dependency succeeded (or it has none): it may run.
    Ready,
    /// A dependency is unfinished and none failed: it waits.
    Waiting,
    /// This dependency did not succeed (`None`: it is no longer stored): the task ends
    /// `cancelled` without an attempt.
    Blocked {
        dependency: TaskId,
        state: Option<TaskState>,
    },
}

/// The readiness of a task running `after` these tasks, whose current states `state_of`
/// gives (`None` for one not stored). The first dependency in `after` order that did not
/// succeed decides a block.
pub fn readiness(after: &[TaskId], state_of: impl Fn(&TaskId) -> Option<TaskState>) -> Readiness {
    let mut waiting = false;
    for id in after {
        match state_of(id) {
            Some(TaskState::Succeeded) => {}
            Some(state) if !state.is_terminal() => waiting = true,
            state => {
                return Readiness::Blocked {
                    dependency: id.clone(),
                    state,
                };
            }
        }
    }
    if waiting {
        Readiness::Waiting
    } else {
        Readiness::Ready
    }
}

/// The task-level error of a task cancelled because `dependency` did not succeed.
pub fn dependency_error(dependency: &TaskId, state: Option<TaskState>) -> String {
    match state {
        Some(state) => format!("dependency {dependency} ended {state}"),
        None => format!("dependency {dependency} is no longer stored"),
    }
}

/// The error of a task cancelled because its ancestor `ancestor` was cancelled.
pub fn ancestor_cancelled_error(ancestor: &TaskId) -> String {
    format!("cancelled with its ancestor {ancestor}")
}

/// One dependency as a `pass_outputs` input shows it: its id, state and the output of its
/// last attempt.
#[derive(Debug, Clone, Copy)]
pub struct DependencyOutput<'a> {
    pub id: &'a TaskId,
    pub state: TaskState,
    pub output: &'a [u8],
}

/// Puts `bytes` under `key` as text when they are UTF-8, else under `<key>_base64`.
fn text_or_base64(map: &mut Map<String, Value>, key: &str, bytes: &[u8]) {
    match fabric_types::text_or_base64(bytes) {
        (Some(text), _) => map.insert(key.to_owned(), Value::String(text)),
        (None, Some(b64)) => map.insert(format!("{key}_base64"), Value::String(b64)),
        (None, None) => None,
    };
}

/// The input of a `pass_outputs` task when it becomes ready: the JSON document
/// `{"input": <own input>, "after": [{"id", "state", "output"}, ...]}` with its `after`
/// tasks in order. Bytes that are not UTF-8 go as base64 under `input_base64` /
/// `output_base64` instead.
pub fn pass_outputs_input(input: &[u8], after: &[DependencyOutput<'_>]) -> Vec<u8> {
    let mut doc = Map::new();
    text_or_base64(&mut doc, "input", input);
    let deps = after
        .iter()
        .map(|d| {
            let mut entry = Map::new();
            entry.insert("id".into(), Value::String(d.id.to_string()));
            entry.insert("state".into(), Value::String(d.state.as_str().into()));
            text_or_base64(&mut entry, "output", d.output);
            Value::Object(entry)
        })
        .collect();
    doc.insert("after".into(), Value::Array(deps));
    serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
}

/// Checks a new task's workflow fields before anything is written: at most [`MAX_AFTER`]
/// dependencies, none named twice, and `pass_outputs` only with dependencies.
pub fn check_new_task(index: usize, task: &NewTask) -> Result<(), StoreError> {
    if task.after.len() > MAX_AFTER {
        return Err(StoreError::InvalidArgument(format!(
            "tasks[{index}].after names {} tasks, more than {MAX_AFTER}",
            task.after.len()
        )));
    }
    for (j, id) in task.after.iter().enumerate() {
        if task.after[..j].contains(id) {
            return Err(StoreError::InvalidArgument(format!(
                "tasks[{index}].after[{j}]: {id} is named twice"
            )));
        }
    }
    if task.pass_outputs && task.after.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "tasks[{index}].pass_outputs needs tasks in after"
        )));
    }
    Ok(())
}

/// The depth of a child of a task of depth `parent_depth`, or the error naming
/// `tasks[index].parent` when it would be deeper than [`MAX_TASK_DEPTH`].
pub fn child_depth(index: usize, parent_depth: u32) -> Result<u32, StoreError> {
    let depth = parent_depth.saturating_add(1);
    if depth > MAX_TASK_DEPTH {
        return Err(StoreError::InvalidArgument(format!(
            "tasks[{index}].parent: a child of a task of depth {parent_depth} would have depth \
             {depth}, deeper than {MAX_TASK_DEPTH}"
        )));
    }
    Ok(depth)
}

/// The error of a task whose `parent` is not a stored task of its tenant.
pub fn unknown_parent(index: usize, tenant: &str, parent: &TaskId) -> StoreError {
    StoreError::InvalidArgument(format!(
        "tasks[{index}].parent: tenant {tenant:?} has no task {parent}"
    ))
}

/// A task's `after` ids as both backends store them in text: a JSON array, `None` when
/// it names none.
pub fn ids_encode(ids: &[TaskId]) -> Option<String> {
    (!ids.is_empty()).then(|| {
        Value::Array(ids.iter().map(|id| Value::String(id.to_string())).collect()).to_string()
    })
}

/// The `after` ids from their stored text (`None` reads as none).
pub fn ids_decode(text: Option<&str>, column: &str) -> Result<Vec<TaskId>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str::<Vec<String>>(text)
            .map(|ids| ids.into_iter().map(TaskId::from).collect())
            .map_err(|e| {
                StoreError::Corrupt(format!("{column} is not a JSON array of strings: {e}"))
            }),
    }
}

/// What every refused set of children's error starts with.
pub const CHILDREN_REFUSED: &str = "child tasks refused: ";

/// The children of task `parent` of `tenant` ready for insertion: each of the tenant, with
/// `parent` set. Refused (the message for [`refused_attempt`]) when there are more than
/// [`MAX_CHILDREN_PER_ATTEMPT`].
pub fn prepare_children(
    tenant: &str,
    parent: &TaskId,
    mut children: Vec<NewTask>,
) -> Result<Vec<NewTask>, String> {
    if children.len() > MAX_CHILDREN_PER_ATTEMPT {
        return Err(format!(
            "{CHILDREN_REFUSED}{} children, more than the {MAX_CHILDREN_PER_ATTEMPT} one attempt \
             may submit",
            children.len()
        ));
    }
    for child in &mut children {
        child.tenant = tenant.to_owned();
        child.parent = Some(parent.clone());
    }
    Ok(children)
}

/// The refusal message for children whose insertion failed with `error`, naming the
/// child's index; `None` when the error is not the children's (the store is unavailable,
/// full, closed or corrupt): then the whole call fails as it would without children.
pub fn children_refusal(error: &StoreError) -> Option<String> {
    let reason = match error {
        StoreError::UnknownDependency { index, id, .. } => {
            format!("children[{index}].after: no task {id}")
        }
        StoreError::DuplicateTaskId { index, id } => {
            format!("children[{index}].id: a task {id} already exists")
        }
        StoreError::ModuleNotFound { index, module, .. } => {
            format!("children[{index}].module: the tenant stores no module {module}")
        }
        StoreError::InvalidArgument(message) => message
            .strip_prefix("tasks[")
            .map_or_else(|| message.clone(), |rest| format!("children[{rest}")),
        StoreError::Conflict(message) => message.clone(),
        StoreError::Unavailable { .. }
        | StoreError::Full { .. }
        | StoreError::Corrupt(_)
        | StoreError::SchemaTooNew { .. }
        | StoreError::Closed(_) => return None,
    };
    Some(format!("{CHILDREN_REFUSED}{reason}"))
}

/// The attempt as recorded when its children were refused: outcome `invalid` and `error`
/// set to `message`; what it used and wrote is kept.
pub fn refused_attempt(mut attempt: Attempt, message: String) -> Attempt {
    attempt.outcome = Outcome::Invalid;
    attempt.error = Some(message);
    attempt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<TaskId> {
        names.iter().map(|n| TaskId::from(*n)).collect()
    }

    #[test]
    fn readiness_waits_for_all_and_blocks_on_the_first_failure() {
        let after = ids(&["a", "b", "c"]);
        let state = |a, b, c| {
            move |id: &TaskId| match id.as_str() {
                "a" => a,
                "b" => b,
                _ => c,
            }
        };
        use TaskState::*;
        assert_eq!(
            readiness(
                &after,
                state(Some(Succeeded), Some(Succeeded), Some(Succeeded))
            ),
            Readiness::Ready
        );
        assert_eq!(
            readiness(&after, state(Some(Succeeded), Some(Running), Some(Waiting))),
            Readiness::Waiting
        );
        assert_eq!(
            readiness(&after, state(Some(Running), Some(Failed), Some(Expired))),
            Readiness::Blocked {
                dependency: TaskId::from("b"),
                state: Some(Failed)
            }
        );
        assert_eq!(
            readiness(&after, state(Some(Succeeded), None, Some(Queued))),
            Readiness::Blocked {
                dependency: TaskId::from("b"),
                state: None
            }
        );
        assert_eq!(readiness(&[], |_| None), Readiness::Ready);
    }

    #[test]
    fn the_pass_outputs_document_keeps_order_and_base64s_bytes() {
        let (a, b) = (TaskId::from("A"), TaskId::from("B"));
        let doc = pass_outputs_input(
            b"own",
            &[
                DependencyOutput {
                    id: &b,
                    state: TaskState::Succeeded,
                    output: b"x\"y",
                },
                DependencyOutput {
                    id: &a,
                    state: TaskState::Succeeded,
                    output: &[0xff, 0x00],
                },
            ],
        );
        let value: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "input": "own",
                "after": [
                    {"id": "B", "state": "succeeded", "output": "x\"y"},
                    {"id": "A", "state": "succeeded", "output_base64": "/wA="},
                ]
            })
        );
        let value: Value = serde_json::from_slice(&pass_outputs_input(&[0xc3], &[])).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"input_base64": "ww==", "after": []})
        );
    }

    #[test]
    fn new_tasks_are_checked_for_their_limits() {
        let module = fabric_types::ModuleId::of(b"m");
        let mut task = NewTask::new("t", module, "");
        task.after = (0..=MAX_AFTER)
            .map(|i| TaskId::from(format!("{i}")))
            .collect();
        let err = check_new_task(3, &task).unwrap_err().to_string();
        assert!(
            err.contains("tasks[3].after names 101 tasks, more than 100"),
            "{err}"
        );
        task.after = ids(&["a", "b", "a"]);
        let err = check_new_task(0, &task).unwrap_err().to_string();
        assert!(err.contains("tasks[0].after[2]: a is named twice"), "{err}");
        task.after = Vec::new();
        task.pass_outputs = true;
        assert!(check_new_task(0, &task).is_err());
        task.after = ids(&["a"]);
        assert!(check_new_task(0, &task).is_ok());
    }

    #[test]
    fn depth_and_count_limits_refuse_children() {
        assert_eq!(child_depth(0, 0).unwrap(), 1);
        assert_eq!(child_depth(0, MAX_TASK_DEPTH - 1).unwrap(), MAX_TASK_DEPTH);
        let err = child_depth(2, MAX_TASK_DEPTH).unwrap_err();
        let refusal = children_refusal(&err).unwrap();
        assert!(
            refusal.starts_with("child tasks refused: children[2].parent:"),
            "{refusal}"
        );
        let module = fabric_types::ModuleId::of(b"m");
        let many = vec![NewTask::new("other", module, ""); MAX_CHILDREN_PER_ATTEMPT + 1];
        let err = prepare_children("t", &TaskId::from("p"), many).unwrap_err();
        assert!(err.starts_with(CHILDREN_REFUSED), "{err}");
        let ok = prepare_children(
            "t",
            &TaskId::from("p"),
            vec![NewTask::new("other", module, "")],
        )
        .unwrap();
        assert_eq!(ok[0].tenant, "t", "a child is of its parent's tenant");
        assert_eq!(ok[0].parent, Some(TaskId::from("p")));
    }

    #[test]
    fn refusals_name_the_child_and_transient_errors_are_not_refusals() {
        let unknown = StoreError::UnknownDependency {
            index: 4,
            tenant: "t".into(),
            id: "X".into(),
        };
        assert_eq!(
            children_refusal(&unknown).unwrap(),
            "child tasks refused: children[4].after: no task X"
        );
        let dup = StoreError::DuplicateTaskId {
            index: 1,
            id: "Y".into(),
        };
        assert_eq!(
            children_refusal(&dup).unwrap(),
            "child tasks refused: children[1].id: a task Y already exists"
        );
        assert!(children_refusal(&StoreError::Closed("x".into())).is_none());
        let attempt = refused_attempt(Attempt::new(Outcome::Ok), "no".into());
        assert_eq!(attempt.outcome, Outcome::Invalid);
        assert_eq!(attempt.error.as_deref(), Some("no"));
    }
}
