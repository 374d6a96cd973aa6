//! The server's rule for the child tasks an agent submits: a child is checked as a
//! client's task is ([`crate::spec::new_task`]), holds no authority its parent lacks (only
//! volumes and egress policies the parent was granted), counts against its tenant's task
//! quota, and joins its parent's trace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fabric_sandbox::EgressPolicy;
use fabric_scheduler::{ChildSpecs, ChildrenError};
use fabric_store::{ClaimedTask, NewTask, Store};
use fabric_types::ModuleId;
use fabric_types::wire::{TaskSpec, code};

use crate::admission::{ModuleResolver, TaskQuota};
use crate::egress::EgressScope;
use crate::rpc::RpcError;
use crate::spec::{self, SpecBounds};

/// What the check of a child needs of the server, shared with the scheduler.
#[derive(Debug)]
pub struct ChildIntake {
    pub store: Arc<dyn Store>,
    pub modules: Arc<ModuleResolver>,
    pub quota: Arc<TaskQuota>,
    pub max_input_bytes: u64,
    pub max_task_memory: u64,
    pub volumes: BTreeMap<String, PathBuf>,
    pub egress: BTreeMap<String, Arc<EgressPolicy>>,
}

/// The reason for a guest, without the JSON-RPC prefix.
fn reason(err: RpcError) -> String {
    err.message
        .strip_prefix("invalid params: ")
        .map_or_else(|| err.message.clone(), str::to_owned)
}

impl ChildIntake {
    /// `spec` as a child of `parent`, its module already resolved.
    fn new_task(
        &self,
        parent: &ClaimedTask,
        module: ModuleId,
        spec: TaskSpec,
        at: &str,
    ) -> Result<NewTask, String> {
        for (guest, volume) in &spec.dirs {
            if !parent.dirs.values().any(|held| held == volume) {
                return Err(format!(
                    "{at}dirs.{guest}: {volume:?} is not a volume the submitting task holds; a \
                     child may be granted only its parent's volumes"
                ));
            }
        }
        for name in &spec.egress {
            if !parent.egress.contains(name) {
                return Err(format!(
                    "{at}egress: {name:?} is not a policy the submitting task holds; a child \
                     may name only its parent's egress policies"
                ));
            }
        }
        let scope = EgressScope::Only(parent.egress.clone());
        let bounds = SpecBounds {
            max_input_bytes: self.max_input_bytes,
            max_task_memory: self.max_task_memory,
            volumes: &self.volumes,
            egress: &self.egress,
            egress_scope: &scope,
        };
        let mut task = spec::new_task(&parent.tenant, module, spec, bounds, at).map_err(reason)?;
        task.trace = parent.trace.clone();
        Ok(task)
    }
}

#[async_trait]
impl ChildSpecs for ChildIntake {
    fn check(&self, parent: &ClaimedTask, spec: &TaskSpec) -> Result<(), String> {
        // The module is resolved when the attempt has ended; any id stands in for it.
        self.new_task(parent, parent.module, spec.clone(), "")
            .map(drop)
    }

    async fn tasks(
        &self,
        parent: &ClaimedTask,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<NewTask>, ChildrenError> {
        let mut tasks = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let at = format!("children[{index}].");
            let module = self
                .modules
                .resolve(&*self.store, &parent.tenant, &spec.module, &at)
                .await
                .map_err(|err| match err.code {
                    code::NOT_FOUND => ChildrenError::Refused(format!(
                        "{at}module: the tenant stores no module {:?}",
                        spec.module
                    )),
                    code::INVALID_PARAMS => ChildrenError::Refused(reason(err)),
                    _ => ChildrenError::Unavailable(err.message),
                })?;
            tasks.push(
                self.new_task(parent, module, spec, &at)
                    .map_err(ChildrenError::Refused)?,
            );
        }
        // Counted as stored at once: should the store refuse them, the count is right
        // again at its next read (within seconds).
        let adding = tasks.len() as u64;
        self.quota
            .admit(&*self.store, &parent.tenant, adding)
            .await
            .map_err(|err| match err.code {
                code::QUOTA => ChildrenError::Refused(err.message),
                _ => ChildrenError::Unavailable(err.message),
            })?
            .settle(adding);
        Ok(tasks)
    }
}
