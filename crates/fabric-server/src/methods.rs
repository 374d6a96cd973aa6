//! The JSON-RPC methods of docs/api.md: one table that the dispatcher looks names up in and
//! that `rpc.discover` describes, so the two cannot drift.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fabric_sandbox::LoadError;
use fabric_store::{
    ModuleDeleteParams, ModuleDeleted, ModuleListParams, ModulePutParams, StatsParams,
    TaskGetParams, TaskId, TaskInsertParams, TaskListParams,
};
use fabric_types::openrpc::OpenRpcDocument;
use fabric_types::wire::{
    self, FabricStats, FieldError, KpiQuery, KpiRows, KpiSubscribe, KpiSubscribed, LimitExceeded,
    ModuleDelete, ModuleEntry, ModuleInUse, ModuleListResult, ModulePut, ModulePutResult, NoParams,
    QueuedByPriority, SubmitBatch, Submitted, SubmittedBatch, TaskList, TaskNotFound, TaskPage,
    TaskRef, TaskRetried, TaskSpec, TaskSubscribe, TaskSubscribed, TaskWait, UnknownMethod,
    UsageQuery, UsageRows, code,
};
use fabric_types::{ModuleId, Priority};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::discover::discover;
use crate::rpc::RpcError;
use crate::server::App;
use crate::spec::{self, SpecBounds};
use crate::ws::Session;

/// How a call arrived: `task.subscribe` needs a WebSocket to send its events on.
#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Http,
    WebSocket(&'a Session),
}

type Reply<'a> = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'a>>;
type Handler = for<'a> fn(&'a App, &'a Principal, Value, Transport<'a>) -> Reply<'a>;

/// One method: its name, what it does, the types of its params and result (whose JSON
/// Schemas `rpc.discover` publishes), the errors it may answer, and the function that
/// answers it.
pub struct Method {
    pub name: &'static str,
    pub summary: &'static str,
    /// The params object's schema: [`schema`] of the type the handler decodes.
    pub params: SchemaFn,
    /// The result's schema: [`schema`] of the type the handler encodes.
    pub result: SchemaFn,
    /// The application errors it may answer besides those any call may get (invalid
    /// params, internal, unauthorized), by code.
    pub errors: &'static [i64],
    handler: Handler,
}

/// Adds a type's schema to a generator, answering a `$ref` to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The [`SchemaFn`] of `T`.
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Errors of a call that may add work.
const ADDS_TASKS: &[i64] = &[
    code::DRAINING,
    code::NOT_FOUND,
    code::QUOTA,
    code::STORE_FULL,
];

/// Every method the server answers.
pub static METHODS: &[Method] = &[
    Method {
        name: "module.put",
        summary: "Stores a WebAssembly module or component (validated and compiled first).",
        params: schema::<ModulePut>,
        result: schema::<ModulePutResult>,
        errors: &[
            code::DRAINING,
            code::QUOTA,
            code::MODULE_INVALID,
            code::BUSY,
            code::STORE_FULL,
        ],
        handler: |app, who, params, _| Box::pin(module_put(app, who, params)),
    },
    Method {
        name: "module.list",
        summary: "The caller's modules, oldest first.",
        params: schema::<NoParams>,
        result: schema::<ModuleListResult>,
        errors: &[],
        handler: |app, who, params, _| Box::pin(module_list(app, who, params)),
    },
    Method {
        name: "module.delete",
        summary: "Deletes one of the caller's modules (by id or name) unless unfinished tasks use it.",
        params: schema::<ModuleDelete>,
        result: schema::<ModuleEntry>,
        errors: &[code::NOT_FOUND, code::CONFLICT, code::STORE_FULL],
        handler: |app, who, params, _| Box::pin(module_delete(app, who, params)),
    },
    Method {
        name: "task.submit",
        summary: "Validates a TaskSpec and commits the task before answering.",
        params: schema::<TaskSpec>,
        result: schema::<Submitted>,
        errors: ADDS_TASKS,
        handler: |app, who, params, _| Box::pin(task_submit(app, who, params)),
    },
    Method {
        name: "task.submit_batch",
        summary: "Submits many TaskSpecs in one transaction: all are stored, or none.",
        params: schema::<SubmitBatch>,
        result: schema::<SubmittedBatch>,
        errors: ADDS_TASKS,
        handler: |app, who, params, _| Box::pin(task_submit_batch(app, who, params)),
    },
    Method {
        name: "task.get",
        summary: "One task with all its attempts.",
        params: schema::<TaskRef>,
        result: schema::<wire::Task>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| Box::pin(task_get(app, who, params)),
    },
    Method {
        name: "task.wait",
        summary: "The task once it is terminal, or as it is when timeout_ms passes.",
        params: schema::<TaskWait>,
        result: schema::<wire::Task>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| Box::pin(task_wait(app, who, params)),
    },
    Method {
        name: "task.list",
        summary: "A page of the caller's tasks, newest first, of at most `limit` tasks and 4 MiB of task JSON, matching every filter given.",
        params: schema::<TaskList>,
        result: schema::<TaskPage>,
        errors: &[],
        handler: |app, who, params, _| Box::pin(task_list(app, who, params)),
    },
    Method {
        name: "task.cancel",
        summary: "Cancels a waiting task at once, a running one within an epoch tick.",
        params: schema::<TaskRef>,
        result: schema::<wire::Task>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| Box::pin(task_cancel(app, who, params)),
    },
    Method {
        name: "task.retry",
        summary: "Queues a failed, cancelled or expired task again as a new task with the same spec, labelled retry_of=<id>.",
        params: schema::<TaskRef>,
        result: schema::<TaskRetried>,
        errors: &[
            code::DRAINING,
            code::NOT_FOUND,
            code::CONFLICT,
            code::QUOTA,
            code::STORE_FULL,
        ],
        handler: |app, who, params, _| Box::pin(crate::retry::task_retry(app, who, params)),
    },
    Method {
        name: "task.subscribe",
        summary: "WebSocket only: sends task.event notifications for one task or all of the caller's.",
        params: schema::<TaskSubscribe>,
        result: schema::<TaskSubscribed>,
        errors: &[code::NOT_FOUND, code::METHOD_NOT_FOUND],
        handler: |app, who, params, transport| {
            Box::pin(task_subscribe(app, who, params, transport))
        },
    },
    Method {
        name: "kpi.query",
        summary: "KPI aggregates (count, sum, min, max, mean) of the caller's attempts, by name and optionally by module, tenant or hour.",
        params: schema::<KpiQuery>,
        result: schema::<KpiRows>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| Box::pin(crate::reports::kpi_query(app, who, params)),
    },
    Method {
        name: "kpi.subscribe",
        summary: "WebSocket only: sends a kpi.report notification for each attempt this node finishes (of one module, when given).",
        params: schema::<KpiSubscribe>,
        result: schema::<KpiSubscribed>,
        errors: &[code::NOT_FOUND, code::METHOD_NOT_FOUND],
        handler: |app, who, params, transport| {
            Box::pin(crate::reports::kpi_subscribe(app, who, params, transport))
        },
    },
    Method {
        name: "usage.report",
        summary: "Metered usage for billing (attempts, fuel, wall time, memory, HTTP) by tenant, module or day; every attempt counted once.",
        params: schema::<UsageQuery>,
        result: schema::<UsageRows>,
        errors: &[],
        handler: |app, who, params, _| Box::pin(crate::reports::usage_report(app, who, params)),
    },
    Method {
        name: "schedule.put",
        summary: "Creates or replaces a cron schedule (5 fields, or 6 with seconds first) that submits `task` at each tick, in `timezone` (IANA, default UTC).",
        params: schema::<fabric_types::wire::SchedulePut>,
        result: schema::<fabric_types::wire::Schedule>,
        errors: &[code::QUOTA],
        handler: |app, who, params, _| Box::pin(crate::schedules::schedule_put(app, who, params)),
    },
    Method {
        name: "schedule.get",
        summary: "One of the caller's schedules.",
        params: schema::<fabric_types::wire::ScheduleName>,
        result: schema::<fabric_types::wire::Schedule>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| Box::pin(crate::schedules::schedule_get(app, who, params)),
    },
    Method {
        name: "schedule.list",
        summary: "The caller's schedules, by name, with their next tick and last task.",
        params: schema::<NoParams>,
        result: schema::<fabric_types::wire::ScheduleList>,
        errors: &[],
        handler: |app, who, params, _| Box::pin(crate::schedules::schedule_list(app, who, params)),
    },
    Method {
        name: "schedule.delete",
        summary: "Deletes one of the caller's schedules; the tasks it created stay.",
        params: schema::<fabric_types::wire::ScheduleName>,
        result: schema::<fabric_types::wire::ScheduleDeleted>,
        errors: &[code::NOT_FOUND],
        handler: |app, who, params, _| {
            Box::pin(crate::schedules::schedule_delete(app, who, params))
        },
    },
    Method {
        name: "fabric.stats",
        summary: "Task counts by state (queued by priority), this node's workers and its cap on one tenant's running attempts.",
        params: schema::<NoParams>,
        result: schema::<FabricStats>,
        errors: &[],
        handler: |app, who, params, _| Box::pin(fabric_stats(app, who, params)),
    },
    Method {
        name: "rpc.discover",
        summary: "This OpenRPC document.",
        params: schema::<NoParams>,
        result: schema::<OpenRpcDocument>,
        errors: &[],
        handler: |_, _, params, _| {
            Box::pin(async move {
                let _: NoParams = decode(params)?;
                Ok(discover())
            })
        },
    },
];

/// The most tasks one `task.list` page holds.
pub const MAX_LIST: usize = 1000;
/// How often `task.wait` looks at the store even without an event (work finished on
/// another node).
const WAIT_POLL: Duration = Duration::from_millis(500);
/// `task.wait` without `timeout_ms`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Answers one call.
pub async fn dispatch(
    app: &App,
    who: &Principal,
    method: &str,
    params: Value,
    transport: Transport<'_>,
) -> Result<Value, RpcError> {
    let Some(entry) = METHODS.iter().find(|m| m.name == method) else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method:?}"),
        )
        .with_data(UnknownMethod {
            method: method.to_owned(),
        }));
    };
    (entry.handler)(app, who, params, transport).await
}

/// -32002 for the task `id` (unknown, or another tenant's).
pub(crate) fn task_not_found(id: &str) -> RpcError {
    RpcError::not_found(format!("task {id:?}")).with_data(TaskNotFound { id: id.to_owned() })
}

pub(crate) fn decode<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_path_to_error::deserialize(params).map_err(RpcError::from_decode)
}

pub(crate) fn encode(value: impl Serialize) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(RpcError::internal)
}

fn refuse_if_draining(app: &App) -> Result<(), RpcError> {
    if app.is_draining() {
        Err(RpcError::draining())
    } else {
        Ok(())
    }
}

/// How long `module.put` waits for a compile thread before answering "busy": with the
/// compile budget's few seconds of compiling, the call answers within 10 s whatever it
/// is given and however many uploads arrive at once.
pub const MODULE_PUT_COMPILE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn module_put(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    refuse_if_draining(app)?;
    let put: ModulePut = decode(params)?;
    let limit = app.config.max_module_bytes;
    let too_large = |size: u64| {
        RpcError::invalid_params(
            "wasm_base64",
            format!("the module is {size} bytes; the limit is {limit} (max_module_bytes)"),
        )
    };
    let estimated = put.wasm_base64.len() as u64 / 4 * 3;
    if estimated > limit + 3 {
        return Err(too_large(estimated));
    }
    let bytes = BASE64
        .decode(put.wasm_base64.as_bytes())
        .map_err(|err| RpcError::invalid_params("wasm_base64", format!("not base64: {err}")))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    if let Some(name) = &put.name
        && (name.is_empty()
            || name.len() > 128
            || name.starts_with("sha256:")
            || name.chars().any(char::is_whitespace))
    {
        return Err(RpcError::invalid_params(
            "name",
            "must be 1-128 characters, without whitespace, not starting with sha256:",
        ));
    }
    let id = ModuleId::of(&bytes);
    // Refused early, before any compiling, when it cannot fit; checked again below.
    module_quota(app, who, &id, bytes.len() as u64).await?;
    // Compiled outside the tenant's lock, so that one tenant's uploads wait for a compile
    // thread side by side (each at most MODULE_PUT_COMPILE_WAIT), not in a queue.
    let sandbox = app.sandbox.clone();
    let (bytes, loaded) = tokio::task::spawn_blocking(move || {
        let loaded = sandbox.load_within(&bytes, MODULE_PUT_COMPILE_WAIT);
        (bytes, loaded)
    })
    .await
    .map_err(RpcError::internal)?;
    let agent = loaded.map_err(|err| match err {
        LoadError::TooLarge { .. } => too_large(bytes.len() as u64),
        busy @ LoadError::Busy { .. } => RpcError::new(code::BUSY, busy.to_string()),
        other => RpcError::new(code::MODULE_INVALID, format!("module invalid: {other}")),
    })?;
    // Held until the module is stored: the quota's check and the write are one step.
    let _one_at_a_time = app.module_puts.lock(&who.tenant).await;
    module_quota(app, who, &id, bytes.len() as u64).await?;
    let size = bytes.len() as u64;
    let info = app
        .store
        .module_put(ModulePutParams {
            tenant: who.tenant.clone(),
            id,
            name: put.name,
            bytes,
            kind: agent.kind(),
            now: OffsetDateTime::now_utc(),
        })
        .await
        .map_err(RpcError::store)?;
    encode(ModulePutResult {
        module: info.id.to_string(),
        size,
        kind: info.kind,
    })
}

/// Refuses a module of `size` bytes that would take the tenant past its module quota
/// (a module it already stores under the same id counts once).
async fn module_quota(
    app: &App,
    who: &Principal,
    id: &ModuleId,
    size: u64,
) -> Result<(), RpcError> {
    let existing = app
        .store
        .module_list(ModuleListParams {
            tenant: who.tenant.clone(),
        })
        .await
        .map_err(RpcError::store)?;
    let stored: u64 = existing
        .iter()
        .filter(|m| m.id != *id)
        .map(|m| m.size)
        .sum();
    let quota = app.config.tenant_max_module_bytes;
    if stored + size > quota {
        return Err(RpcError::new(
            code::QUOTA,
            format!(
                "module quota: this tenant stores {stored} bytes of modules; adding {size} would pass its limit of {quota} (tenant_max_module_bytes)"
            ),
        )
        .with_data(LimitExceeded {
            limit: "tenant_max_module_bytes".into(),
            max: quota,
            current: Some(stored),
        }));
    }
    Ok(())
}

async fn module_list(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let _: NoParams = decode(params)?;
    let modules = app
        .store
        .module_list(ModuleListParams {
            tenant: who.tenant.clone(),
        })
        .await
        .map_err(RpcError::store)?;
    encode(ModuleListResult {
        modules: modules
            .into_iter()
            .map(|m| ModuleEntry {
                module: m.id.to_string(),
                name: m.name,
                size: m.size,
                kind: m.kind,
                created_at: m.created_at,
            })
            .collect(),
    })
}

async fn module_delete(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let ModuleDelete { module: reference } = decode(params)?;
    let module = crate::admission::module_ref(&reference, "")?;
    let deleted = app
        .store
        .module_delete(ModuleDeleteParams {
            tenant: who.tenant.clone(),
            module,
        })
        .await
        .map_err(RpcError::store)?;
    match deleted {
        ModuleDeleted::Deleted(info) => {
            app.modules.forget(&who.tenant, &info.id);
            app.sandbox.forget(&info.id);
            encode(ModuleEntry {
                module: info.id.to_string(),
                name: info.name,
                size: info.size,
                kind: info.kind,
                created_at: info.created_at,
            })
        }
        ModuleDeleted::NotFound => Err(RpcError::not_found(format!("module {reference:?}"))
            .with_data(FieldError {
                field: "module".into(),
            })),
        ModuleDeleted::InUse { id, unfinished } => Err(RpcError::new(
            code::CONFLICT,
            format!(
                "module {reference:?} ({id}) is used by {unfinished} unfinished task(s) of this tenant (waiting, scheduled, queued or running); cancel them or wait for them to finish, then delete it"
            ),
        )
        .with_data(ModuleInUse {
            module: id.to_string(),
            unfinished_tasks: unfinished,
        })),
    }
}

pub(crate) fn bounds<'a>(app: &'a App, who: &'a Principal) -> SpecBounds<'a> {
    SpecBounds {
        max_input_bytes: app.config.max_input_bytes,
        max_task_memory: app.config.max_task_memory,
        volumes: &app.config.volumes,
        egress: &app.config.egress,
        egress_scope: &who.egress,
    }
}

async fn submit(
    app: &App,
    who: &Principal,
    specs: Vec<TaskSpec>,
    batch: bool,
) -> Result<Vec<Submitted>, RpcError> {
    refuse_if_draining(app)?;
    let mut tasks = Vec::with_capacity(specs.len());
    let mut resolved: Vec<(String, ModuleId)> = Vec::new();
    for (index, spec) in specs.into_iter().enumerate() {
        let at = if batch {
            format!("tasks[{index}].")
        } else {
            String::new()
        };
        let module = match resolved.iter().find(|(name, _)| *name == spec.module) {
            Some((_, id)) => *id,
            None => {
                let id = app
                    .modules
                    .resolve(&*app.store, &who.tenant, &spec.module, &at)
                    .await?;
                resolved.push((spec.module.clone(), id));
                id
            }
        };
        tasks.push(spec::new_task(
            &who.tenant,
            module,
            spec,
            bounds(app, who),
            &at,
        )?);
    }
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let admitted = app
        .quota
        .admit(&*app.store, &who.tenant, tasks.len() as u64)
        .await?;
    let priorities: Vec<Priority> = tasks.iter().map(|t| t.priority).collect();
    let inserted = app
        .store
        .task_insert(TaskInsertParams {
            tasks,
            now: OffsetDateTime::now_utc(),
        })
        .await
        .map_err(|err| match err {
            // The module was deleted since it was resolved.
            fabric_store::StoreError::ModuleNotFound { index, module, .. } => {
                let at = if batch {
                    format!("tasks[{index}].")
                } else {
                    String::new()
                };
                if let Ok(id) = module.parse::<ModuleId>() {
                    app.modules.forget(&who.tenant, &id);
                }
                RpcError::not_found(format!("module {module:?}")).with_data(FieldError {
                    field: format!("{at}module"),
                })
            }
            // An `after` id that is not a task of this tenant.
            fabric_store::StoreError::UnknownDependency { index, id, .. } => {
                let at = if batch {
                    format!("tasks[{index}].")
                } else {
                    String::new()
                };
                RpcError::invalid_params(format!("{at}after"), format!("no task {id:?}"))
            }
            other => RpcError::store(other),
        })?;
    app.scheduler.wake();
    let mut fresh = 0;
    for (inserted, priority) in inserted.iter().zip(priorities) {
        if !inserted.deduplicated {
            app.metrics.task_submitted(priority);
            fresh += 1;
        }
    }
    admitted.settle(fresh);
    Ok(inserted
        .into_iter()
        .map(|i| Submitted {
            id: i.id.into_string(),
            state: i.state,
            deduplicated: i.deduplicated,
        })
        .collect())
}

async fn task_submit(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let spec: TaskSpec = decode(params)?;
    let mut submitted = submit(app, who, vec![spec], false).await?;
    encode(
        submitted
            .pop()
            .ok_or_else(|| RpcError::internal("no task inserted"))?,
    )
}

async fn task_submit_batch(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let batch: SubmitBatch = decode(params)?;
    if batch.tasks.len() > app.config.max_batch {
        return Err(RpcError::invalid_params(
            "tasks",
            format!(
                "{} tasks; the limit is {} (max_batch)",
                batch.tasks.len(),
                app.config.max_batch
            ),
        ));
    }
    let tasks = submit(app, who, batch.tasks, true).await?;
    encode(SubmittedBatch { tasks })
}

async fn get(app: &App, who: &Principal, id: &str) -> Result<wire::Task, RpcError> {
    let record = app
        .store
        .task_get(TaskGetParams {
            tenant: who.scope(),
            id: TaskId::from(id),
        })
        .await
        .map_err(RpcError::store)?
        .ok_or_else(|| task_not_found(id))?;
    Ok(spec::task_view(record))
}

async fn task_get(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let TaskRef { id } = decode(params)?;
    encode(get(app, who, &id).await?)
}

async fn task_wait(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let TaskWait { id, timeout_ms } = decode(params)?;
    let timeout = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WAIT)
        .min(app.config.max_wait);
    let until = Instant::now() + timeout;
    let task_id = TaskId::from(id.as_str());
    let mut phase = app.phase();
    loop {
        let registration = app.waiters.register(&task_id);
        let task = get(app, who, &id).await?;
        if task.state.is_terminal() || Instant::now() >= until || app.is_draining() {
            return encode(task);
        }
        let poll = WAIT_POLL.min(until.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = registration.woken() => {}
            () = tokio::time::sleep(poll) => {}
            _ = phase.changed() => {}
        }
    }
}

async fn task_list(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let TaskList {
        state,
        module,
        labels,
        parent,
        limit,
        cursor,
    } = decode(params)?;
    let module = match module {
        None => None,
        Some(reference) => Some(match reference.parse::<ModuleId>() {
            Ok(id) => id,
            Err(_) => app
                .modules
                .resolve(&*app.store, &who.tenant, &reference, "")
                .await
                .map_err(|err| {
                    if err.code == code::NOT_FOUND {
                        RpcError::invalid_params("module", format!("no module named {reference:?}"))
                    } else {
                        err
                    }
                })?,
        }),
    };
    if let Some(key) = labels.keys().find(|k| k.is_empty()) {
        return Err(RpcError::invalid_params(
            "labels",
            format!("label name {key:?} is empty"),
        ));
    }
    if parent
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > 64)
    {
        return Err(RpcError::invalid_params(
            "parent",
            "a task id is 1 to 64 bytes",
        ));
    }
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(RpcError::invalid_params(
            "limit",
            format!("{limit} is out of range 1..={MAX_LIST}"),
        ));
    }
    let page = app
        .store
        .task_list(TaskListParams {
            tenant: who.scope(),
            state,
            module,
            labels,
            parent: parent.map(|p| TaskId::from(p.as_str())),
            limit,
            cursor,
        })
        .await
        .map_err(|err| match err {
            fabric_store::StoreError::InvalidArgument(message) => {
                RpcError::invalid_params("cursor", message)
            }
            other => RpcError::store(other),
        })?;
    encode(spec::bounded_page(
        page.tasks.into_iter().map(spec::task_view),
        page.next_cursor,
        spec::MAX_LIST_BYTES,
    ))
}

async fn task_cancel(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let TaskRef { id } = decode(params)?;
    let record = app
        .scheduler
        .cancel(who.scope(), TaskId::from(id.as_str()))
        .await
        .map_err(RpcError::internal)?
        .ok_or_else(|| task_not_found(&id))?;
    encode(spec::task_view(record))
}

async fn task_subscribe(
    app: &App,
    who: &Principal,
    params: Value,
    transport: Transport<'_>,
) -> Result<Value, RpcError> {
    let TaskSubscribe { id } = decode(params)?;
    let Transport::WebSocket(session) = transport else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            "task.subscribe needs a WebSocket: connect to GET /rpc with an upgrade",
        ));
    };
    if let Some(id) = &id {
        get(app, who, id).await?;
    }
    session.subscribe(who, id.clone());
    encode(TaskSubscribed {
        subscribed: true,
        id,
    })
}

async fn fabric_stats(app: &App, who: &Principal, params: Value) -> Result<Value, RpcError> {
    let _: NoParams = decode(params)?;
    let stats = app
        .store
        .stats(StatsParams {
            tenant: who.scope(),
        })
        .await
        .map_err(RpcError::store)?;
    let [critical, high, normal, low, background] = stats.queued_by_priority;
    encode(FabricStats {
        queued: QueuedByPriority {
            critical,
            high,
            normal,
            low,
            background,
        },
        waiting: stats.waiting,
        scheduled: stats.scheduled,
        running: stats.running,
        succeeded: stats.succeeded,
        failed: stats.failed,
        cancelled: stats.cancelled,
        expired: stats.expired,
        workers: u64::from(app.scheduler.workers()),
        tenant_max_running: u64::from(app.scheduler.tenant_cap()),
    })
}
