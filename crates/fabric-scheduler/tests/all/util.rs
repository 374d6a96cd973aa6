//! A scheduler on a fresh SQLite store in a temporary directory (on the system clock or
//! an injected one), and ways to wait for tasks by their events rather than by sleeping.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fabric_sandbox::{Sandbox, SandboxConfig};
use fabric_scheduler::{Clock, Scheduler, SchedulerConfig, SystemClock};
use fabric_store::{
    ModuleKind, ModulePutParams, NewTask, Store, TaskGetParams, TaskId, TaskInsertParams,
    TaskRecord,
};
use fabric_store_sqlite::{SqliteOptions, SqliteStore};
use fabric_types::ModuleId;
use time::OffsetDateTime;

pub const TENANT: &str = "tests";

pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            Arc::new(
                Sandbox::new(SandboxConfig {
                    slots: 64,
                    ..SandboxConfig::default()
                })
                .unwrap(),
            )
        })
        .clone()
}

pub struct Fabric {
    pub store: Arc<dyn Store>,
    pub scheduler: Scheduler,
    pub _dir: tempfile::TempDir,
}

pub fn config(workers: u32) -> SchedulerConfig {
    SchedulerConfig {
        workers,
        maintenance_every: Duration::from_millis(50),
        ..SchedulerConfig::new("test-node")
    }
}

pub fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("fabric.db"), SqliteOptions::default()).unwrap())
}

impl Fabric {
    pub fn start(config: SchedulerConfig) -> Self {
        Self::start_with_clock(config, Arc::new(SystemClock))
    }

    /// A scheduler that takes "now" from `clock`.
    pub fn start_with_clock(config: SchedulerConfig, clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let scheduler = Scheduler::start(config, store.clone(), sandbox(), clock).unwrap();
        Self {
            store,
            scheduler,
            _dir: dir,
        }
    }

    pub async fn module(&self, wasm: &[u8]) -> ModuleId {
        put_module(&*self.store, wasm).await
    }

    pub async fn submit(&self, task: NewTask) -> TaskId {
        let id = insert(&*self.store, task).await;
        self.scheduler.wake();
        id
    }

    pub async fn get(&self, id: &TaskId) -> TaskRecord {
        get(&*self.store, id).await
    }

    /// Waits (on the scheduler's events, with a generous cap) until the task is terminal.
    pub async fn wait(&self, id: &TaskId) -> TaskRecord {
        wait_finished(&*self.store, &self.scheduler, id).await
    }
}

/// Waits (on `scheduler`'s events, with a generous cap) until the task is terminal in
/// `store`.
pub async fn wait_finished(store: &dyn Store, scheduler: &Scheduler, id: &TaskId) -> TaskRecord {
    let mut events = scheduler.subscribe();
    let waiting = async {
        loop {
            let task = get(store, id).await;
            if task.state.is_terminal() {
                return task;
            }
            // Any event may be the one; a lagged receiver just looks again.
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the task did not finish within 30 s")
}

pub async fn put_module(store: &dyn Store, wasm: &[u8]) -> ModuleId {
    put_module_as(store, TENANT, wasm).await
}

/// Stores a module for `tenant`.
pub async fn put_module_as(store: &dyn Store, tenant: &str, wasm: &[u8]) -> ModuleId {
    let id = ModuleId::of(wasm);
    let kind = if ModuleKind::Component.as_str()
        == fabric_types::ModuleKind::sniff(wasm).unwrap().as_str()
    {
        ModuleKind::Component
    } else {
        ModuleKind::Module
    };
    let params = ModulePutParams {
        tenant: tenant.into(),
        id,
        name: None,
        bytes: wasm.to_vec(),
        kind,
        now: OffsetDateTime::now_utc(),
    };
    store.module_put(params).await.unwrap();
    id
}

pub async fn insert(store: &dyn Store, task: NewTask) -> TaskId {
    let inserted = store
        .task_insert(TaskInsertParams {
            tasks: vec![task],
            now: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    inserted.into_iter().next().unwrap().id
}

pub async fn get(store: &dyn Store, id: &TaskId) -> TaskRecord {
    store
        .task_get(TaskGetParams {
            tenant: None,
            id: id.clone(),
        })
        .await
        .unwrap()
        .expect("task exists")
}

pub fn task(module: ModuleId, input: &str) -> NewTask {
    NewTask::new(TENANT, module, input.as_bytes().to_vec())
}

/// The attempts' outcomes, oldest first.
pub fn outcomes(task: &TaskRecord) -> Vec<String> {
    task.attempts
        .iter()
        .map(|a| {
            a.result
                .as_ref()
                .map_or("running".to_string(), |r| r.outcome.to_string())
        })
        .collect()
}
