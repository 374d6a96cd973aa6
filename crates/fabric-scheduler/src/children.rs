//! Child tasks an attempt submits (`fabric:agent/tasks`): the grant each attempt gets, the
//! checks a spec passes while the guest runs, and the turning of an `ok` attempt's
//! children into tasks for its completion. What a spec may hold is the embedder's rule
//! ([`ChildSpecs`]; the server checks a child as it checks a client's task); what is
//! checked here is what only a child has: no idempotency key, and `after` ids that name
//! earlier children or stored tasks.

use std::sync::Arc;

use async_trait::async_trait;
use fabric_sandbox::{Child, ChildTasks, TaskGrant};
use fabric_store::workflow::CHILDREN_REFUSED;
use fabric_store::{ClaimedTask, NewTask, TaskId};
use fabric_types::wire::TaskSpec;

use crate::Clock;

/// How the embedder checks the specs an attempt submits and makes them tasks. Without one
/// in [`crate::SchedulerConfig::children`], no attempt may submit children (every
/// `submit` is refused as not granted).
#[async_trait]
pub trait ChildSpecs: Send + Sync + std::fmt::Debug {
    /// While the guest runs: whether `spec` may become a child of `parent`, or why not
    /// (the guest sees the reason). It must not block: it runs inside the guest's call.
    /// The module is resolved later, in [`ChildSpecs::tasks`].
    fn check(&self, parent: &ClaimedTask, spec: &TaskSpec) -> Result<(), String>;

    /// After the attempt ended `ok`: the children as tasks, in order, each spec checked
    /// again and its module resolved. Priority and deadline are already inherited from
    /// the parent where the spec set none; the scheduler sets each task's id afterwards.
    async fn tasks(
        &self,
        parent: &ClaimedTask,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<NewTask>, ChildrenError>;
}

/// Why an `ok` attempt's children cannot be made tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildrenError {
    /// A child may not be created, for this reason: the attempt is recorded `invalid`
    /// with it (after [`CHILDREN_REFUSED`]) and no child exists.
    Refused(String),
    /// The store did not answer: the attempt counts as `lost` (its task runs again) and
    /// no child exists.
    Unavailable(String),
}

/// The grant of child tasks to one attempt of `parent`.
pub(crate) fn grant(
    specs: &Arc<dyn ChildSpecs>,
    clock: &Arc<dyn Clock>,
    parent: &ClaimedTask,
) -> TaskGrant {
    TaskGrant {
        depth: parent.depth,
        host: Arc::new(Granted {
            specs: specs.clone(),
            clock: clock.clone(),
            parent: parent.clone(),
        }),
    }
}

/// One attempt's [`ChildTasks`].
struct Granted {
    specs: Arc<dyn ChildSpecs>,
    clock: Arc<dyn Clock>,
    parent: ClaimedTask,
}

impl ChildTasks for Granted {
    fn check(&self, spec: &TaskSpec, _earlier: &[Child]) -> Result<(), String> {
        check_own(spec, &self.parent.task_id)?;
        self.specs.check(&self.parent, spec)
    }

    fn mint_id(&self) -> String {
        TaskId::generate(self.clock.now()).into_string()
    }
}

/// The rules only a child has. An idempotency key is refused: a child is created at most
/// once already (with its attempt's completion), and a key matching a stored task would
/// leave the guest holding an id no task has. An `after` id may not name the running
/// task (it has not succeeded yet, so the child could never run); other ids that are not
/// earlier children must be stored tasks of the tenant, which the store checks when the
/// children are created.
fn check_own(spec: &TaskSpec, parent: &TaskId) -> Result<(), String> {
    if spec.idempotency_key.is_some() {
        return Err(
            "idempotency_key: a child task may not set one (a child is created once, with \
             the completion of the attempt that submitted it)"
                .into(),
        );
    }
    if let Some(j) = spec.after.iter().position(|id| id == parent.as_str()) {
        return Err(format!(
            "after[{j}]: {parent} is the submitting task itself, which has not ended"
        ));
    }
    Ok(())
}

/// The tasks for an `ok` attempt's children, each with the id the guest was given and,
/// where its spec set none, the parent's priority and deadline. A refusal's message
/// starts with [`CHILDREN_REFUSED`].
pub(crate) async fn tasks(
    specs: &dyn ChildSpecs,
    parent: &ClaimedTask,
    children: Vec<Child>,
) -> Result<Vec<NewTask>, ChildrenError> {
    let (ids, specs_in): (Vec<String>, Vec<TaskSpec>) = children
        .into_iter()
        .map(|child| {
            let mut spec = child.spec;
            spec.priority = spec.priority.or(Some(parent.priority));
            spec.deadline = spec.deadline.or(parent.deadline);
            (child.id, spec)
        })
        .unzip();
    let mut tasks = specs.tasks(parent, specs_in).await.map_err(|e| match e {
        ChildrenError::Refused(why) => ChildrenError::Refused(format!("{CHILDREN_REFUSED}{why}")),
        unavailable => unavailable,
    })?;
    for (task, id) in tasks.iter_mut().zip(ids) {
        task.id = Some(TaskId::from(id));
    }
    Ok(tasks)
}
