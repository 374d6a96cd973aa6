//! Every read of the store; each is one statement, so it sees one consistent snapshot.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use fabric_store::{
    ModuleGetParams, ModuleInfo, ModuleListParams, ModuleRecord, ModuleRef, Stats, StatsParams,
    StoreError, TaskListParams, TaskPage, TaskRecord, from_millis,
};
use fabric_types::TaskState;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use crate::db::{Db, query, query_opt};
use crate::rows::{
    MODULE_COLUMNS, attempt_columns, group_tasks, parse_priority, parse_state, read_module_info,
    task_columns, task_with_attempts_sql,
};

/// The most tasks one `task_list` page returns, whatever limit is asked for.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// One task with its attempts; `tenant: None` reads any tenant's.
pub(crate) async fn load_task<C: GenericClient>(
    c: &C,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    let rows = match tenant {
        None => query(c, "read a task", task_with_attempts_sql(false), &[&id]).await?,
        Some(tenant) => {
            query(
                c,
                "read a task",
                task_with_attempts_sql(true),
                &[&id, &tenant],
            )
            .await?
        }
    };
    Ok(group_tasks(&rows)?.into_iter().next())
}

/// `task_list`: a page of tasks (newest first) joined with their attempts in one statement.
/// The SQL is built for the filters present, so each variant gets its own plan; the
/// `parent`, `module` and `labels` filters each have an index (`tasks_parent`,
/// `tasks_module`, `tasks_labels`).
pub(crate) async fn task_list(db: &Db, p: TaskListParams) -> Result<TaskPage, StoreError> {
    let limit = p.limit.min(MAX_LIST_LIMIT);
    if limit == 0 {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next_cursor: None,
        });
    }
    let state = p.state.map(TaskState::as_str);
    let limit = limit as i64;
    let mut filters = Vec::new();
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(tenant) = &p.tenant {
        args.push(tenant);
        filters.push(format!("tenant = ${}", args.len()));
    }
    if let Some(state) = &state {
        args.push(state);
        filters.push(format!("state = ${}", args.len()));
    }
    let module = p.module.map(|m| m.to_string());
    if let Some(module) = &module {
        args.push(module);
        filters.push(format!("module = ${}", args.len()));
    }
    let parent = p.parent.as_ref().map(|id| id.as_str());
    if let Some(parent) = &parent {
        args.push(parent);
        filters.push(format!("parent = ${}", args.len()));
    }
    // Containment, which the GIN index `tasks_labels` serves.
    let labels = (!p.labels.is_empty()).then(|| crate::rows::map_json(&p.labels));
    if let Some(labels) = &labels {
        args.push(labels);
        filters.push(format!("labels @> (${}::text)::jsonb", args.len()));
    }
    if let Some(cursor) = &p.cursor {
        args.push(cursor);
        filters.push(format!("id < ${}", args.len()));
    }
    args.push(&limit);
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let sql = format!(
        "WITH page AS (SELECT * FROM tasks {filter} ORDER BY id DESC LIMIT ${})
         SELECT {}, {} FROM page p LEFT JOIN attempts a ON a.task_id = p.id
         ORDER BY p.id DESC, a.number",
        args.len(),
        task_columns("p"),
        attempt_columns("a"),
    );
    let client = db.client("task_list").await?;
    let rows = query(&client, "list tasks", &sql, &args).await?;
    let tasks = group_tasks(&rows)?;
    let next_cursor = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(TaskPage { tasks, next_cursor })
}

static MODULE_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {MODULE_COLUMNS}, bytes FROM modules WHERE tenant = $1 AND id = $2")
});

const MODULE_BY_NAME: &str = "SELECT m.id, m.name, m.size, m.kind, m.created_at, m.bytes
    FROM module_names n JOIN modules m ON m.tenant = n.tenant AND m.id = n.module_id
    WHERE n.tenant = $1 AND n.name = $2";

/// `module_get`: by id, or by the name that points at it.
pub(crate) async fn module_get(
    db: &Db,
    p: ModuleGetParams,
) -> Result<Option<ModuleRecord>, StoreError> {
    let client = db.client("module_get").await?;
    let row = match &p.module {
        ModuleRef::Id(id) => {
            query_opt(
                &client,
                "read a module",
                &MODULE_BY_ID,
                &[&p.tenant, &id.to_string()],
            )
            .await?
        }
        ModuleRef::Name(name) => {
            query_opt(
                &client,
                "read a module by name",
                MODULE_BY_NAME,
                &[&p.tenant, name],
            )
            .await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    let info = read_module_info(&row)?;
    Ok(Some(ModuleRecord {
        id: info.id,
        name: info.name,
        size: info.size,
        kind: info.kind,
        created_at: info.created_at,
        bytes: row.get(5),
    }))
}

static MODULE_LIST: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = $1 ORDER BY created_at, id")
});

/// `module_list`: a tenant's modules, oldest first, without bytes.
pub(crate) async fn module_list(
    db: &Db,
    p: ModuleListParams,
) -> Result<Vec<ModuleInfo>, StoreError> {
    let client = db.client("module_list").await?;
    query(&client, "list modules", &MODULE_LIST, &[&p.tenant])
        .await?
        .iter()
        .map(read_module_info)
        .collect()
}

/// `stats`: task counts by state and, for queued tasks, by priority.
pub(crate) async fn stats(db: &Db, p: StatsParams) -> Result<Stats, StoreError> {
    let client = db.client("stats").await?;
    let rows = match &p.tenant {
        None => {
            query(
                &client,
                "count tasks",
                "SELECT state, priority, count(*) FROM tasks GROUP BY state, priority",
                &[],
            )
            .await?
        }
        Some(tenant) => {
            query(
                &client,
                "count tasks",
                "SELECT state, priority, count(*) FROM tasks WHERE tenant = $1 GROUP BY state, priority",
                &[tenant],
            )
            .await?
        }
    };
    let mut stats = Stats::default();
    for row in rows {
        let count = row.get::<_, i64>(2).max(0) as u64;
        stats.add(parse_state(row.get(0))?, parse_priority(row.get(1))?, count);
    }
    Ok(stats)
}

/// `next_wakeup`: the earliest `run_at` of a scheduled task (an index probe).
pub(crate) async fn next_wakeup(db: &Db) -> Result<Option<OffsetDateTime>, StoreError> {
    let client = db.client("next_wakeup").await?;
    let rows = query(
        &client,
        "find the next scheduled task",
        "SELECT min(run_at) FROM tasks WHERE state = 'scheduled'",
        &[],
    )
    .await?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(from_millis))
}
