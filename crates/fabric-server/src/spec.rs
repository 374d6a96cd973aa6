//! The edges of the task model: a client's `TaskSpec` checked field by field into a
//! store's `NewTask` (each refusal names the field), and a stored `TaskRecord` shown as
//! the API's `Task` (and a page of them bounded in bytes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fabric_store::{NewTask, TaskRecord};
use fabric_types::wire::{LimitsSpec, RetrySpec, Task, TaskPage, TaskSpec};
use fabric_types::{Limits, ModuleId, Outcome, RetryPolicy, TaskState, text_or_base64};

use crate::rpc::RpcError;

/// The bounds a spec is checked against (from the server configuration).
#[derive(Debug, Clone, Copy)]
pub struct SpecBounds<'a> {
    pub max_input_bytes: u64,
    pub max_task_memory: u64,
    /// The volumes a task may name in `dirs` (name → host directory).
    pub volumes: &'a BTreeMap<String, PathBuf>,
    /// The egress policies the server defines, and those the tenant may name.
    pub egress: &'a BTreeMap<String, std::sync::Arc<fabric_sandbox::EgressPolicy>>,
    pub egress_scope: &'a crate::egress::EgressScope,
}

/// The most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest timeout a task may ask for: one day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The largest output or log cap a task may ask for: 16 MiB.
pub const MAX_CAPTURE_BYTES: u64 = 16 << 20;
/// The longest backoff: one day.
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_VALUE_BYTES: usize = 4096;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 256;
/// The most directory grants one task may ask for.
pub const MAX_DIRS: usize = 8;
/// The longest guest path of a directory grant.
pub const MAX_GUEST_PATH_BYTES: usize = 256;

/// Checks everything in `spec` but the module (resolved by the caller into `module`).
/// `at` prefixes field names (`"tasks[3]."` inside a batch).
pub fn new_task(
    tenant: &str,
    module: ModuleId,
    spec: TaskSpec,
    bounds: SpecBounds,
    at: &str,
) -> Result<NewTask, RpcError> {
    let field = |name: &str| format!("{at}{name}");
    let input = match (spec.input, spec.input_base64) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params(
                field("input_base64"),
                "give input or input_base64, not both",
            ));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => BASE64.decode(encoded.as_bytes()).map_err(|err| {
            RpcError::invalid_params(field("input_base64"), format!("not base64: {err}"))
        })?,
        (None, None) => Vec::new(),
    };
    if input.len() as u64 > bounds.max_input_bytes {
        return Err(RpcError::invalid_params(
            field("input"),
            format!(
                "the input is {} bytes; the limit is {} (max_input_bytes)",
                input.len(),
                bounds.max_input_bytes
            ),
        ));
    }
    let limits = limits(spec.limits.unwrap_or_default(), bounds, &field)?;
    let retry = retry(spec.retry.unwrap_or_default(), &field)?;
    if let Some(key) = &spec.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(RpcError::invalid_params(
            field("idempotency_key"),
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        ));
    }
    check_map(
        &spec.env,
        MAX_ENV_VARS,
        MAX_ENV_VALUE_BYTES,
        is_env_name,
        &field("env"),
    )?;
    check_map(
        &spec.labels,
        MAX_LABELS,
        MAX_LABEL_BYTES,
        |k| !k.is_empty() && k.len() <= 64,
        &field("labels"),
    )?;
    check_dirs(&spec.dirs, bounds.volumes, &field("dirs"))?;
    crate::egress::check_task(
        &spec.egress,
        bounds.egress,
        bounds.egress_scope,
        &field("egress"),
    )?;
    fabric_types::check_args(&spec.args)
        .map_err(|why| RpcError::invalid_params(field("args"), why))?;
    let after = check_after(&spec.after, spec.pass_outputs, &field)?;
    if let Some(concurrency) = &spec.concurrency {
        concurrency.check().map_err(|(name, why)| {
            RpcError::invalid_params(field(&format!("concurrency.{name}")), why)
        })?;
    }
    Ok(NewTask {
        tenant: tenant.to_owned(),
        module,
        input,
        priority: spec.priority.unwrap_or_default(),
        limits,
        retry,
        idempotency_key: spec.idempotency_key,
        run_at: spec.run_at,
        deadline: spec.deadline,
        env: spec.env,
        labels: spec.labels,
        dirs: spec.dirs,
        egress: spec.egress,
        args: spec.args,
        id: None,
        after,
        pass_outputs: spec.pass_outputs,
        parent: None,
        concurrency: spec.concurrency,
    })
}

/// A spec's `after` ids: at most [`MAX_AFTER`], each a task id (text of 1 to 64 bytes)
/// named once; `pass_outputs` needs at least one. Whether each names a task of the tenant
/// is the store's to say ([`fabric_store::StoreError::UnknownDependency`]).
fn check_after(
    after: &[String],
    pass_outputs: bool,
    field: &dyn Fn(&str) -> String,
) -> Result<Vec<fabric_store::TaskId>, RpcError> {
    use fabric_types::workflow::MAX_AFTER;
    if after.len() > MAX_AFTER {
        return Err(RpcError::invalid_params(
            field("after"),
            format!("names {} tasks; the limit is {MAX_AFTER}", after.len()),
        ));
    }
    for (i, id) in after.iter().enumerate() {
        if id.is_empty() || id.len() > 64 {
            return Err(RpcError::invalid_params(
                field(&format!("after[{i}]")),
                "a task id is 1 to 64 bytes",
            ));
        }
        if after[..i].contains(id) {
            return Err(RpcError::invalid_params(
                field(&format!("after[{i}]")),
                format!("{id} is named twice"),
            ));
        }
    }
    if pass_outputs && after.is_empty() {
        return Err(RpcError::invalid_params(
            field("pass_outputs"),
            "passes the outputs of the tasks in after, and after is empty",
        ));
    }
    Ok(after
        .iter()
        .map(|id| fabric_store::TaskId::from(id.as_str()))
        .collect())
}

fn limits(
    spec: LimitsSpec,
    bounds: SpecBounds,
    field: &dyn Fn(&str) -> String,
) -> Result<Limits, RpcError> {
    let defaults = Limits::default();
    let check = |name: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
        let value = value.unwrap_or(default);
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(RpcError::invalid_params(
                field(&format!("limits.{name}")),
                format!("{value} is out of range {min}..={max}"),
            ))
        }
    };
    Ok(Limits {
        fuel: check("fuel", spec.fuel, defaults.fuel, 1, u64::MAX / 2)?,
        memory_bytes: check(
            "memory_bytes",
            spec.memory_bytes,
            defaults.memory_bytes.min(bounds.max_task_memory),
            64 << 10,
            bounds.max_task_memory,
        )?,
        timeout_ms: check(
            "timeout_ms",
            spec.timeout_ms,
            defaults.timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?,
        output_bytes: check(
            "output_bytes",
            spec.output_bytes,
            defaults.output_bytes,
            0,
            MAX_CAPTURE_BYTES,
        )?,
        log_bytes: check(
            "log_bytes",
            spec.log_bytes,
            defaults.log_bytes,
            0,
            MAX_CAPTURE_BYTES,
        )?,
    })
}

fn retry(spec: RetrySpec, field: &dyn Fn(&str) -> String) -> Result<RetryPolicy, RpcError> {
    let mut policy = RetryPolicy::default();
    if let Some(max) = spec.max_attempts {
        if !(1..=MAX_ATTEMPTS).contains(&max) {
            return Err(RpcError::invalid_params(
                field("retry.max_attempts"),
                format!("{max} is out of range 1..={MAX_ATTEMPTS}"),
            ));
        }
        policy.max_attempts = max;
    }
    for (name, value, slot) in [
        ("backoff_ms", spec.backoff_ms, &mut policy.backoff_ms),
        (
            "max_backoff_ms",
            spec.max_backoff_ms,
            &mut policy.max_backoff_ms,
        ),
    ] {
        if let Some(value) = value {
            if value > MAX_BACKOFF_MS {
                return Err(RpcError::invalid_params(
                    field(&format!("retry.{name}")),
                    format!("{value} is above {MAX_BACKOFF_MS} (one day)"),
                ));
            }
            *slot = value;
        }
    }
    if policy.max_backoff_ms < policy.backoff_ms {
        policy.max_backoff_ms = policy.backoff_ms;
    }
    Ok(policy)
}

fn check_map(
    map: &BTreeMap<String, String>,
    max_entries: usize,
    max_value_bytes: usize,
    valid_key: impl Fn(&str) -> bool,
    field: &str,
) -> Result<(), RpcError> {
    if map.len() > max_entries {
        return Err(RpcError::invalid_params(
            field,
            format!("{} entries; the limit is {max_entries}", map.len()),
        ));
    }
    for (key, value) in map {
        if !valid_key(key) {
            return Err(RpcError::invalid_params(
                format!("{field}.{key}"),
                "invalid name",
            ));
        }
        if value.len() > max_value_bytes || value.contains('\0') {
            return Err(RpcError::invalid_params(
                format!("{field}.{key}"),
                format!("the value must be at most {max_value_bytes} bytes without NUL"),
            ));
        }
    }
    Ok(())
}

/// Directory grants name a guest path and a volume of the operator's, never a host path:
/// at most [`MAX_DIRS`], each guest path absolute and plain (`/a/b`: no `.`, `..`, empty
/// components or trailing `/`, so one directory has one spelling), each volume defined.
fn check_dirs(
    dirs: &BTreeMap<String, String>,
    volumes: &BTreeMap<String, PathBuf>,
    field: &str,
) -> Result<(), RpcError> {
    if dirs.len() > MAX_DIRS {
        return Err(RpcError::invalid_params(
            field,
            format!("{} grants; the limit is {MAX_DIRS}", dirs.len()),
        ));
    }
    for (guest, volume) in dirs {
        let at = format!("{field}.{guest}");
        if !is_guest_path(guest) {
            return Err(RpcError::invalid_params(
                at,
                format!(
                    "the guest path must be absolute, at most {MAX_GUEST_PATH_BYTES} bytes, \
                     with no empty, `.` or `..` component and no NUL, such as /data"
                ),
            ));
        }
        if !volumes.contains_key(volume) {
            return Err(RpcError::invalid_params(
                at,
                format!(
                    "{volume:?} is not a volume of this server; a task names a volume the \
                     operator defined with --volume, never a host path"
                ),
            ));
        }
    }
    Ok(())
}

fn is_guest_path(path: &str) -> bool {
    path.len() <= MAX_GUEST_PATH_BYTES
        && !path.contains('\0')
        && path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
        })
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

/// A stored task as the API shows it: finished attempts in order; for a finished task the
/// output of its last attempt, and an `error` unless it succeeded.
pub fn task_view(record: TaskRecord) -> Task {
    let attempts: Vec<_> = record
        .attempts
        .into_iter()
        .filter_map(|attempt| attempt.result)
        .collect();
    let last = attempts.last();
    let (output, output_base64) = match last {
        Some(last) if record.state.is_terminal() => text_or_base64(&last.output),
        _ => (None, None),
    };
    let error = match record.state {
        TaskState::Failed => Some(match last {
            Some(last) => describe_failure(last, attempts.len()),
            None => "failed without an attempt".to_string(),
        }),
        TaskState::Cancelled => Some(record.error.unwrap_or_else(|| "cancelled".to_string())),
        TaskState::Expired => {
            Some("expired: its deadline passed before it could start".to_string())
        }
        _ => None,
    };
    Task {
        id: record.id.into_string(),
        module: record.module.to_string(),
        state: record.state,
        priority: record.priority,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        output,
        output_base64,
        error,
        labels: record.labels,
        dirs: record.dirs,
        egress: record.egress,
        args: record.args,
        progress: record.progress,
        concurrency: record.concurrency,
        attempts,
        after: record
            .after
            .into_iter()
            .map(|id| id.into_string())
            .collect(),
        pass_outputs: record.pass_outputs,
        parent: record.parent.map(|id| id.into_string()),
    }
}

/// The most bytes of task JSON one `task.list` page carries: 4 MiB.
pub const MAX_LIST_BYTES: usize = 4 << 20;

/// A `task.list` page of the store's page (`tasks`, continued at `more`) whose tasks' JSON
/// stays within `max_bytes`: it stops before the task that would pass the limit (a page
/// always holds its first task, however large), and then continues after the last task it
/// holds (a store's cursor is the id of the last task of its page).
pub fn bounded_page(
    tasks: impl IntoIterator<Item = Task>,
    more: Option<String>,
    max_bytes: usize,
) -> TaskPage {
    let mut page = Vec::new();
    let mut bytes = 0;
    for task in tasks {
        // The task's JSON and the comma after it.
        let size = serde_json::to_vec(&task).map_or(0, |json| json.len()) + 1;
        if !page.is_empty() && bytes + size > max_bytes {
            let next_cursor = page.last().map(|last: &Task| last.id.clone());
            return TaskPage {
                tasks: page,
                next_cursor,
            };
        }
        bytes += size;
        page.push(task);
    }
    TaskPage {
        tasks: page,
        next_cursor: more,
    }
}

fn describe_failure(last: &fabric_types::Attempt, attempts: usize) -> String {
    let what = match last.outcome {
        Outcome::Exit => format!("exit code {}", last.exit_code.unwrap_or_default()),
        Outcome::Trap => format!("trap: {}", last.trap.as_deref().unwrap_or("unknown")),
        outcome => match &last.error {
            Some(error) => format!("{outcome}: {error}"),
            None => outcome.to_string(),
        },
    };
    format!("attempt {attempts} ended with {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: serde_json::Value) -> Result<NewTask, RpcError> {
        let volumes = BTreeMap::from([
            ("data".to_owned(), PathBuf::from("/srv/data")),
            ("models".to_owned(), PathBuf::from("/srv/models")),
        ]);
        let bounds = SpecBounds {
            max_input_bytes: 16,
            max_task_memory: 1 << 20,
            volumes: &volumes,
            egress: &BTreeMap::new(),
            egress_scope: &crate::egress::EgressScope::Any,
        };
        let spec: TaskSpec = serde_json::from_value(spec).unwrap();
        new_task("t", ModuleId::of(b"m"), spec, bounds, "tasks[2].")
    }

    fn field_of(spec: serde_json::Value) -> String {
        let err = check(spec).unwrap_err();
        err.data.unwrap()["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_valid_spec_takes_defaults_within_the_bounds() {
        let task = check(json!({"module": "m", "input_base64": "AAE="})).unwrap();
        assert_eq!(task.input, vec![0, 1]);
        assert_eq!(
            task.limits.memory_bytes,
            1 << 20,
            "default capped by the bound"
        );
        assert_eq!(task.retry.max_attempts, RetryPolicy::default().max_attempts);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                json!({"module": "m", "input": "a", "input_base64": "YQ=="}),
                "tasks[2].input_base64",
            ),
            (
                json!({"module": "m", "input": "x".repeat(17)}),
                "tasks[2].input",
            ),
            (
                json!({"module": "m", "input_base64": "!!"}),
                "tasks[2].input_base64",
            ),
            (
                json!({"module": "m", "limits": {"memory_bytes": 2 << 20}}),
                "tasks[2].limits.memory_bytes",
            ),
            (
                json!({"module": "m", "limits": {"fuel": 0}}),
                "tasks[2].limits.fuel",
            ),
            (
                json!({"module": "m", "limits": {"timeout_ms": 0}}),
                "tasks[2].limits.timeout_ms",
            ),
            (
                json!({"module": "m", "retry": {"max_attempts": 0}}),
                "tasks[2].retry.max_attempts",
            ),
            (
                json!({"module": "m", "retry": {"backoff_ms": MAX_BACKOFF_MS + 1}}),
                "tasks[2].retry.backoff_ms",
            ),
            (
                json!({"module": "m", "idempotency_key": ""}),
                "tasks[2].idempotency_key",
            ),
            (
                json!({"module": "m", "env": {"1BAD": "x"}}),
                "tasks[2].env.1BAD",
            ),
            (
                json!({"module": "m", "labels": {"": "x"}}),
                "tasks[2].labels.",
            ),
            (
                json!({"module": "m", "args": vec!["a"; fabric_types::MAX_ARGS + 1]}),
                "tasks[2].args",
            ),
            (json!({"module": "m", "args": ["a\u{0}b"]}), "tasks[2].args"),
            (
                json!({"module": "m", "args": ["x".repeat(fabric_types::MAX_ARGS_BYTES + 1)]}),
                "tasks[2].args",
            ),
            (
                json!({"module": "m", "dirs": {"/data": "nope"}}),
                "tasks[2].dirs./data",
            ),
            (
                json!({"module": "m", "dirs": {"/data": "/srv/data"}}),
                "tasks[2].dirs./data",
            ),
            (
                json!({"module": "m", "dirs": {"/data": "Data"}}),
                "tasks[2].dirs./data",
            ),
            (
                json!({"module": "m", "dirs": {"/data": ""}}),
                "tasks[2].dirs./data",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(field_of(spec.clone()), expected, "{spec}");
        }
    }

    #[test]
    fn dirs_name_defined_volumes_at_plain_absolute_guest_paths() {
        let task = check(json!({"module": "m", "dirs": {"/data": "data", "/in/models": "models"}}))
            .unwrap();
        assert_eq!(
            task.dirs,
            BTreeMap::from([
                ("/data".to_owned(), "data".to_owned()),
                ("/in/models".to_owned(), "models".to_owned()),
            ])
        );
        for guest in [
            "data",
            "",
            "/",
            "/data/",
            "//data",
            "/data//x",
            "/./data",
            "/data/.",
            "/..",
            "/data/..",
            "/data/../etc",
            "../data",
            "/da\0ta",
        ] {
            let spec = json!({"module": "m", "dirs": {guest: "data"}});
            assert_eq!(
                field_of(spec),
                format!("tasks[2].dirs.{guest}"),
                "{guest:?}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_GUEST_PATH_BYTES));
        let spec = json!({"module": "m", "dirs": {long.clone(): "data"}});
        assert_eq!(field_of(spec), format!("tasks[2].dirs.{long}"));
        let many: BTreeMap<String, &str> =
            (0..=MAX_DIRS).map(|i| (format!("/d{i}"), "data")).collect();
        assert_eq!(
            field_of(json!({"module": "m", "dirs": many})),
            "tasks[2].dirs"
        );
        let eight: BTreeMap<String, &str> =
            (0..MAX_DIRS).map(|i| (format!("/d{i}"), "data")).collect();
        assert_eq!(
            check(json!({"module": "m", "dirs": eight}))
                .unwrap()
                .dirs
                .len(),
            MAX_DIRS
        );
        let err = check(json!({"module": "m", "dirs": {"/data": "/etc"}})).unwrap_err();
        assert!(
            err.message.contains("\"/etc\" is not a volume"),
            "{}",
            err.message
        );
    }

    fn listed(id: &str, output: &str) -> Task {
        serde_json::from_value(json!({
            "id": id, "module": "sha256:00", "state": "succeeded", "priority": "normal",
            "created_at": "2026-01-01T00:00:00Z", "output": output,
        }))
        .unwrap()
    }

    fn ids(page: &TaskPage) -> Vec<&str> {
        page.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn a_list_page_stops_before_passing_its_byte_limit_and_continues_after_its_last_task() {
        let tasks: Vec<Task> = (0..10)
            .map(|i| listed(&format!("t{i}"), &"x".repeat(300)))
            .collect();
        let one = serde_json::to_vec(&tasks[0]).unwrap().len() + 1;
        let page = bounded_page(tasks.clone(), Some("t9".into()), 3 * one + one / 2);
        assert_eq!(ids(&page), ["t0", "t1", "t2"]);
        assert_eq!(page.next_cursor.as_deref(), Some("t2"));
        let json = serde_json::to_vec(&page.tasks).unwrap();
        assert!(json.len() <= 3 * one + one / 2, "{} bytes", json.len());

        // Everything fits: the store's own cursor stands, whatever it is.
        let page = bounded_page(tasks.clone(), None, 10 * one);
        assert_eq!(page.tasks.len(), 10);
        assert_eq!(page.next_cursor, None);
        let page = bounded_page(tasks, Some("t9".into()), 10 * one);
        assert_eq!(page.next_cursor.as_deref(), Some("t9"));
    }

    #[test]
    fn a_task_larger_than_the_byte_limit_comes_alone_on_its_page() {
        let tasks = vec![listed("big", &"x".repeat(5000)), listed("small", "")];
        let page = bounded_page(tasks, None, 1000);
        assert_eq!(ids(&page), ["big"]);
        assert_eq!(page.next_cursor.as_deref(), Some("big"));
    }
}
