//! What agents report: task args, attempt KPIs, fenced progress, and the hourly KPI and usage
//! rollups with their queries.

use std::sync::Arc;

use fabric_types::wire::{KpiGroup, UsageGroup};
use fabric_types::{Attempt, KpiStats, Kpis, ModuleId, ModuleKind, Outcome, Progress, TaskState};

use super::{LEASE, T0_MS, at, claim, get, insert, new_task, no_jitter};
use crate::rollup::{HOUR_MS, hour_start};
use crate::{
    AttemptId, Completion, KpiAggregate, KpiQueryParams, ModulePutParams, NewTask, Next,
    ProgressUpdate, Store, TaskCompleteParams, TaskInsertParams, TaskProgressParams,
    TaskPruneParams, TaskRescueParams, UsageAggregate, UsageReportParams, from_millis,
};

/// Completes one attempt with `attempt` and `next` at `now`; it must be accepted.
async fn finish(store: &dyn Store, id: &AttemptId, attempt: Attempt, next: Next, now: i64) {
    let done = store
        .task_complete(TaskCompleteParams {
            completions: vec![Completion {
                children: Vec::new(),
                attempt_id: id.clone(),
                attempt,
                next,
            }],
            now: at(now),
        })
        .await
        .expect("task_complete");
    assert!(done[0].accepted, "completion refused: {done:?}");
}

/// KPIs of one name: each value recorded once, in order.
fn kpis(entries: &[(&str, &[f64])]) -> Kpis {
    entries
        .iter()
        .map(|(name, values)| {
            let mut stats = KpiStats::new(values[0]);
            for v in &values[1..] {
                stats.record(*v);
            }
            (name.to_string(), stats)
        })
        .collect()
}

/// Stores a named module for `tenant` and returns its id.
async fn named_module(store: &dyn Store, tenant: &str, name: &str) -> ModuleId {
    let bytes = format!("(module {name})").into_bytes();
    let id = ModuleId::of(&bytes);
    store
        .module_put(ModulePutParams {
            tenant: tenant.into(),
            id,
            name: Some(name.into()),
            bytes,
            kind: ModuleKind::Module,
            now: at(-1),
        })
        .await
        .expect("module_put");
    id
}

/// Runs one task of `tenant`'s `module` to its end at `now` with `attempt`.
async fn run(store: &dyn Store, tenant: &str, module: ModuleId, attempt: Attempt, now: i64) {
    let mut task = new_task(tenant, "r");
    task.module = module;
    insert(store, task, at(now)).await;
    let c = claim(store, "n", 1, at(now)).await.remove(0);
    let next = match attempt.outcome {
        Outcome::Ok => Next::Finish(TaskState::Succeeded),
        _ => Next::Finish(TaskState::Failed),
    };
    finish(store, &c.attempt_id, attempt, next, now).await;
}

fn with_kpis(outcome: Outcome, entries: &[(&str, &[f64])]) -> Attempt {
    let mut attempt = Attempt::new(outcome);
    attempt.kpis = kpis(entries);
    attempt
}

async fn kpi_query(store: &dyn Store, params: KpiQueryParams) -> Vec<KpiAggregate> {
    store.kpi_query(params).await.expect("kpi_query")
}

/// `(name, count, sum, min, max)` of each row.
fn stats(rows: &[KpiAggregate]) -> Vec<(String, u64, f64, f64, f64)> {
    rows.iter()
        .map(|r| (r.name.clone(), r.count, r.sum, r.min, r.max))
        .collect()
}

/// A task's args reach its claim and its record; an attempt's KPIs are kept whatever its
/// outcome, and read back with the attempt.
pub async fn args_and_kpis_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let mut task = new_task("acme", "x");
    task.args = vec!["--mode".into(), "fast lane".into()];
    let id = insert(store, task, at(0)).await;
    let plain = insert(store, new_task("acme", "plain"), at(1)).await;
    let claimed = claim(store, "n", 2, at(2)).await;
    assert_eq!(claimed[0].task_id, id);
    assert_eq!(claimed[0].args, ["--mode", "fast lane"]);
    assert!(claimed[1].args.is_empty());
    let mut attempt = with_kpis(
        Outcome::Trap,
        &[("score", &[0.5, -2.0, 7.25]), ("n", &[1.0])],
    );
    attempt.usage.fuel_consumed = 3;
    let want = attempt.kpis.clone();
    finish(
        store,
        &claimed[0].attempt_id,
        attempt,
        Next::Finish(TaskState::Failed),
        3,
    )
    .await;
    finish(
        store,
        &claimed[1].attempt_id,
        Attempt::new(Outcome::Ok),
        Next::Finish(TaskState::Succeeded),
        3,
    )
    .await;
    let task = get(store, &id).await;
    assert_eq!(task.args, ["--mode", "fast lane"]);
    let result = task.attempts[0].result.as_ref().expect("the attempt ended");
    assert_eq!(result.outcome, Outcome::Trap);
    assert_eq!(result.kpis, want, "a failed attempt's KPIs were not kept");
    assert_eq!(result.kpis["score"].last, 7.25);
    assert_eq!(result.usage.fuel_consumed, 3);
    let plain = get(store, &plain).await;
    assert!(plain.args.is_empty());
    assert!(plain.attempts[0].result.as_ref().unwrap().kpis.is_empty());
}

fn progress(done: f64, message: &str, ms: i64) -> Progress {
    Progress {
        done,
        message: message.into(),
        at: at(ms),
    }
}

async fn report(store: &dyn Store, updates: Vec<(&AttemptId, Progress)>) -> u64 {
    let updates = updates
        .into_iter()
        .map(|(id, progress)| ProgressUpdate {
            attempt_id: id.clone(),
            progress,
        })
        .collect();
    store
        .task_progress(TaskProgressParams { updates })
        .await
        .expect("task_progress")
}

/// Progress is applied only while its attempt holds the task; a claim clears it, and the
/// task keeps its last progress when it finishes.
pub async fn progress_fenced(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert(store, new_task("acme", "x"), at(0)).await;
    let other = insert(store, new_task("acme", "y"), at(0)).await;
    let claimed = claim(store, "n", 2, at(1)).await;
    let (first, bystander) = (&claimed[0].attempt_id, &claimed[1].attempt_id);
    assert_eq!(get(store, &id).await.progress, None);
    // The last update of an attempt in a batch wins; an unknown attempt is dropped.
    let applied = report(
        store,
        vec![
            (first, progress(0.1, "start", 2)),
            (&AttemptId::from("no-such-attempt"), progress(0.9, "x", 2)),
            (first, progress(0.25, "a quarter", 3)),
        ],
    )
    .await;
    assert_eq!(applied, 1);
    assert_eq!(
        get(store, &id).await.progress,
        Some(progress(0.25, "a quarter", 3))
    );
    assert_eq!(get(store, &other).await.progress, None, "progress leaked");

    // The attempt ends and the task waits for a retry: the old attempt no longer holds it.
    finish(
        store,
        first,
        Attempt::new(Outcome::Trap),
        Next::Retry { run_at: at(10) },
        10,
    )
    .await;
    assert_eq!(
        report(store, vec![(first, progress(0.5, "stale", 11))]).await,
        0
    );
    assert_eq!(
        get(store, &id).await.progress,
        Some(progress(0.25, "a quarter", 3)),
        "a stale attempt's progress was applied"
    );
    let second = claim(store, "n", 1, at(12)).await.remove(0);
    assert_eq!(second.task_id, id);
    assert_eq!(
        get(store, &id).await.progress,
        None,
        "a claim kept old progress"
    );
    assert_eq!(
        report(store, vec![(&second.attempt_id, progress(1.0, "done", 13))]).await,
        1
    );
    finish(
        store,
        &second.attempt_id,
        Attempt::new(Outcome::Ok),
        Next::Finish(TaskState::Succeeded),
        14,
    )
    .await;
    assert_eq!(
        report(store, vec![(&second.attempt_id, progress(0.0, "late", 15))]).await,
        0
    );
    let task = get(store, &id).await;
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.progress, Some(progress(1.0, "done", 13)));
    // A bad value is refused.
    let err = store
        .task_progress(TaskProgressParams {
            updates: vec![ProgressUpdate {
                attempt_id: bystander.clone(),
                progress: progress(1.5, "", 16),
            }],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("updates[0]"), "{err}");
}

/// KPI queries by name, module, tenant and hour; filters by module, name and hour bounds;
/// each tenant sees only its own KPIs, the admin all of them; a requeued attempt's KPIs are
/// discarded.
pub async fn kpi_query_groups_and_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let alpha = named_module(store, "acme", "alpha").await;
    let beta = named_module(store, "acme", "beta").await;
    let alpha_g = named_module(store, "globex", "alpha").await;
    assert_eq!(alpha, alpha_g, "the same bytes");
    let h0 = hour_start(T0_MS);
    let next_hour = h0 + HOUR_MS - T0_MS + 5; // 5 ms into the next hour
    run(
        store,
        "acme",
        alpha,
        with_kpis(Outcome::Ok, &[("score", &[1.0, 3.0])]),
        0,
    )
    .await;
    run(
        store,
        "acme",
        alpha,
        with_kpis(Outcome::Exit, &[("score", &[-2.0])]),
        10,
    )
    .await;
    run(
        store,
        "acme",
        beta,
        with_kpis(Outcome::Ok, &[("score", &[10.0])]),
        20,
    )
    .await;
    let both = &[("score", &[4.0][..]), ("latency", &[0.5, 1.5][..])];
    run(
        store,
        "acme",
        alpha,
        with_kpis(Outcome::Ok, both),
        next_hour,
    )
    .await;
    run(
        store,
        "globex",
        alpha,
        with_kpis(Outcome::Ok, &[("score", &[100.0])]),
        30,
    )
    .await;
    // A requeued attempt: its KPIs are discarded.
    let mut t = new_task("acme", "requeued");
    t.module = alpha;
    insert(store, t, at(40)).await;
    let c = claim(store, "n", 1, at(40)).await.remove(0);
    let requeued = with_kpis(Outcome::Cancelled, &[("score", &[1000.0])]);
    finish(store, &c.attempt_id, requeued, Next::Requeue, 41).await;

    let acme = |group_by| KpiQueryParams {
        tenant: Some("acme".into()),
        group_by,
        ..KpiQueryParams::default()
    };
    let rows = kpi_query(store, acme(KpiGroup::Name)).await;
    assert_eq!(
        stats(&rows),
        [
            ("latency".into(), 2, 2.0, 0.5, 1.5),
            ("score".into(), 5, 16.0, -2.0, 10.0)
        ]
    );
    assert_eq!(rows[1].mean(), 16.0 / 5.0);
    assert!(
        rows.iter()
            .all(|r| r.module.is_none() && r.tenant.is_none() && r.hour.is_none())
    );

    let rows = kpi_query(store, acme(KpiGroup::Module)).await;
    let mut want = vec![
        (Some(alpha), Some("alpha"), "latency", 2, 2.0),
        (Some(alpha), Some("alpha"), "score", 4, 6.0),
        (Some(beta), Some("beta"), "score", 1, 10.0),
    ];
    want.sort_by_key(|(m, _, name, ..)| (m.map(|m| m.to_string()), *name));
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.module,
                r.module_name.as_deref(),
                r.name.as_str(),
                r.count,
                r.sum,
            )
        })
        .collect();
    assert_eq!(got, want);

    let rows = kpi_query(store, acme(KpiGroup::Hour)).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.hour, r.name.as_str(), r.count))
        .collect();
    let (hour0, hour1) = (Some(from_millis(h0)), Some(from_millis(h0 + HOUR_MS)));
    assert_eq!(
        got,
        [
            (hour0, "score", 4),
            (hour1, "latency", 2),
            (hour1, "score", 1)
        ]
    );

    // Filters: module, name, and hours (since rounds down, until rounds up).
    let only_beta = kpi_query(
        store,
        KpiQueryParams {
            module: Some(beta),
            ..acme(KpiGroup::Name)
        },
    )
    .await;
    assert_eq!(stats(&only_beta), [("score".into(), 1, 10.0, 10.0, 10.0)]);
    let latency = kpi_query(
        store,
        KpiQueryParams {
            name: Some("latency".into()),
            ..acme(KpiGroup::Name)
        },
    )
    .await;
    assert_eq!(stats(&latency), [("latency".into(), 2, 2.0, 0.5, 1.5)]);
    let later = kpi_query(
        store,
        KpiQueryParams {
            since: Some(from_millis(h0 + HOUR_MS + 1_800_000)),
            ..acme(KpiGroup::Name)
        },
    )
    .await;
    assert_eq!(
        stats(&later),
        [
            ("latency".into(), 2, 2.0, 0.5, 1.5),
            ("score".into(), 1, 4.0, 4.0, 4.0)
        ]
    );
    for until in [h0 + 1, h0 + HOUR_MS] {
        let earlier = kpi_query(
            store,
            KpiQueryParams {
                until: Some(from_millis(until)),
                ..acme(KpiGroup::Name)
            },
        )
        .await;
        assert_eq!(
            stats(&earlier),
            [("score".into(), 4, 12.0, -2.0, 10.0)],
            "until {until}"
        );
    }

    // Tenants: each sees its own; the admin sees both.
    let globex = kpi_query(
        store,
        KpiQueryParams {
            tenant: Some("globex".into()),
            ..KpiQueryParams::default()
        },
    )
    .await;
    assert_eq!(stats(&globex), [("score".into(), 1, 100.0, 100.0, 100.0)]);
    let admin = kpi_query(
        store,
        KpiQueryParams {
            group_by: KpiGroup::Tenant,
            ..KpiQueryParams::default()
        },
    )
    .await;
    let got: Vec<_> = admin
        .iter()
        .map(|r| (r.tenant.as_deref(), r.name.as_str(), r.count, r.sum))
        .collect();
    assert_eq!(
        got,
        [
            (Some("acme"), "latency", 2, 2.0),
            (Some("acme"), "score", 5, 16.0),
            (Some("globex"), "score", 1, 100.0)
        ]
    );
}

async fn usage(
    store: &dyn Store,
    tenant: Option<&str>,
    group_by: UsageGroup,
) -> Vec<UsageAggregate> {
    store
        .usage_report(UsageReportParams {
            tenant: tenant.map(String::from),
            group_by,
            ..UsageReportParams::default()
        })
        .await
        .expect("usage_report")
}

fn used(fuel: u64, peak: u64, wall: u64, http: [u64; 3]) -> Attempt {
    let mut attempt = Attempt::new(Outcome::Ok);
    attempt.usage.fuel_consumed = fuel;
    attempt.usage.peak_memory_bytes = peak;
    attempt.usage.wall_ms = wall;
    [
        attempt.usage.http_requests,
        attempt.usage.http_bytes_sent,
        attempt.usage.http_bytes_received,
    ] = http;
    attempt
}

/// Usage counts every attempt exactly: finished, requeued (it ran) and lost (zero usage);
/// by tenant, module and day; each tenant sees only its own. Rollups survive pruning.
pub async fn usage_report_exact(store: Arc<dyn Store>) {
    let store = &*store;
    let alpha = named_module(store, "acme", "alpha").await;
    let beta = named_module(store, "acme", "beta").await;
    run(
        store,
        "acme",
        alpha,
        used(100, 1_000, 2_000, [1, 10, 20]),
        0,
    )
    .await;
    run(store, "acme", beta, used(5, 3_000, 500, [0, 0, 0]), 10).await;
    // Requeued: counted with its usage.
    let mut t = new_task("acme", "requeued");
    t.module = alpha;
    t.retry.max_attempts = 1; // lost, it fails (and is not claimed again)
    insert(store, t, at(20)).await;
    let c = claim(store, "n", 1, at(20)).await.remove(0);
    let mut requeued = used(50, 0, 1_000, [2, 1, 1]);
    requeued.outcome = Outcome::Cancelled;
    finish(store, &c.attempt_id, requeued, Next::Requeue, 21).await;
    let c = claim(store, "n", 1, at(22)).await.remove(0);
    // Lost: counted with no usage.
    let rescued = store
        .task_rescue(TaskRescueParams {
            now: at(22 + LEASE.as_millis() as i64 + 1),
            max: 10,
            jitter: no_jitter,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].attempt_id, c.attempt_id);
    run(
        store,
        "globex",
        crate::testkit::module_id(),
        used(7, 0, 0, [0, 0, 0]),
        30,
    )
    .await;
    // The next day (UTC) begins two hours after T0.
    let tomorrow = 2 * HOUR_MS;
    run(store, "acme", beta, used(1, 0, 0, [0, 0, 0]), tomorrow).await;

    let acme = usage(store, Some("acme"), UsageGroup::Tenant).await;
    let want = UsageAggregate {
        tenant: Some("acme".into()),
        attempts: 5,
        fuel_consumed: 156,
        wall_ms: 3_500,
        memory_byte_seconds: 2_000 + 1_500,
        http_requests: 3,
        http_bytes_sent: 11,
        http_bytes_received: 21,
        ..UsageAggregate::default()
    };
    assert_eq!(acme, std::slice::from_ref(&want));

    let by_module = usage(store, Some("acme"), UsageGroup::Module).await;
    let mut expected = vec![
        (Some(alpha), Some("alpha"), 3, 150),
        (Some(beta), Some("beta"), 2, 6),
    ];
    expected.sort_by_key(|(m, ..)| m.map(|m| m.to_string()));
    let got: Vec<_> = by_module
        .iter()
        .map(|r| {
            (
                r.module,
                r.module_name.as_deref(),
                r.attempts,
                r.fuel_consumed,
            )
        })
        .collect();
    assert_eq!(got, expected);

    let by_day = usage(store, None, UsageGroup::Day).await;
    let got: Vec<_> = by_day
        .iter()
        .map(|r| (r.day.as_deref(), r.attempts, r.fuel_consumed))
        .collect();
    assert_eq!(
        got,
        [(Some("2023-11-14"), 5, 162), (Some("2023-11-15"), 1, 1)]
    );

    let globex = usage(store, Some("globex"), UsageGroup::Tenant).await;
    assert_eq!(globex.len(), 1);
    assert_eq!((globex[0].attempts, globex[0].fuel_consumed), (1, 7));
    let admin = usage(store, None, UsageGroup::Tenant).await;
    let tenants: Vec<_> = admin
        .iter()
        .map(|r| (r.tenant.as_deref(), r.attempts))
        .collect();
    assert_eq!(tenants, [(Some("acme"), 5), (Some("globex"), 1)]);
    let bounded = store
        .usage_report(UsageReportParams {
            tenant: Some("acme".into()),
            since: Some(at(tomorrow)),
            ..UsageReportParams::default()
        })
        .await
        .unwrap();
    assert_eq!((bounded[0].attempts, bounded[0].fuel_consumed), (1, 1));

    // Billing outlives task retention.
    let kpis_before = kpi_query(store, KpiQueryParams::default()).await;
    let pruned = store
        .task_prune(TaskPruneParams {
            finished_before: at(1 << 40),
            max: 1_000,
        })
        .await
        .unwrap();
    assert!(pruned >= 5, "pruned {pruned}");
    assert_eq!(usage(store, Some("acme"), UsageGroup::Tenant).await, [want]);
    assert_eq!(
        kpi_query(store, KpiQueryParams::default()).await,
        kpis_before
    );
}

/// A batch of many completions adds up exactly, KPIs and usage alike, and survives pruning.
pub async fn rollup_batch_sums(store: Arc<dyn Store>) {
    let store = &*store;
    const N: usize = 500;
    let tasks: Vec<NewTask> = (0..N).map(|i| new_task("acme", &i.to_string())).collect();
    store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap();
    let claimed = claim(store, "n", N, at(1)).await;
    assert_eq!(claimed.len(), N);
    let completions = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = i as f64;
            let mut attempt = with_kpis(Outcome::Ok, &[("v", &[v, v + 0.5])]);
            attempt.usage.fuel_consumed = i as u64;
            attempt.usage.wall_ms = 2;
            attempt.usage.peak_memory_bytes = 1_000;
            Completion {
                children: Vec::new(),
                attempt_id: c.attempt_id.clone(),
                attempt,
                next: Next::Finish(TaskState::Succeeded),
            }
        })
        .collect();
    let done = store
        .task_complete(TaskCompleteParams {
            completions,
            now: at(2),
        })
        .await
        .unwrap();
    assert!(done.iter().all(|d| d.accepted));
    let n = N as f64;
    let rows = kpi_query(store, KpiQueryParams::default()).await;
    // Σ (i + i + 0.5) over 0..N
    let sum = n * (n - 1.0) + 0.5 * n;
    assert_eq!(
        stats(&rows),
        [("v".into(), 2 * N as u64, sum, 0.0, n - 0.5)]
    );
    let total = usage(store, None, UsageGroup::Tenant).await;
    let fuel = (N * (N - 1) / 2) as u64;
    assert_eq!(
        (total[0].attempts, total[0].fuel_consumed, total[0].wall_ms),
        (N as u64, fuel, 2 * N as u64)
    );
    assert_eq!(total[0].memory_byte_seconds, 2 * N as u64);
}
