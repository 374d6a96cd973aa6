//! The tenant cap: one tenant's long attempts hold at most the cap of the workers, and
//! other tenants' tasks run beside them instead of queueing behind them.

use std::time::Duration;

use fabric_store::{NewTask, TaskId, TaskRecord};
use fabric_types::{Limits, RetryPolicy, TaskState};
use time::OffsetDateTime;

use crate::util::*;

/// The most attempts among `tasks` whose guests ran at the same instant (an attempt that
/// ends at the instant another starts does not overlap it).
fn most_at_once(tasks: &[TaskRecord]) -> usize {
    let mut edges: Vec<(OffsetDateTime, i32)> = Vec::new();
    for attempt in tasks.iter().flat_map(|t| &t.attempts) {
        let result = attempt.result.as_ref().expect("every attempt ended");
        if let (Some(start), Some(end)) = (result.started_at, result.finished_at) {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    // Ends before starts at the same instant.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_cap_leaves_the_other_workers_to_other_tenants() {
    const CAP: u32 = 2;
    let fabric = Fabric::start(fabric_scheduler::SchedulerConfig {
        tenant_max_running: Some(CAP),
        ..config(4)
    });
    assert_eq!(fabric.scheduler.tenant_cap(), CAP);
    let store = &*fabric.store;
    // Tenant a's attempts hold their workers by sleeping, not spinning: a worker is held
    // the same either way, and sleeping guests leave the cores to the tests running beside.
    let hold = put_module_as(store, "a", fabric_agents::p1::SLEEP).await;
    let echo = put_module_as(store, "b", fabric_agents::p1::ECHO).await;

    // Tenant a: more long tasks than workers, each running until cancelled (a minute's
    // sleep, far beyond the test).
    let mut holding: Vec<TaskId> = Vec::new();
    for _ in 0..6 {
        let mut t = NewTask::new("a", hold, b"60000".to_vec());
        t.limits = Limits {
            timeout_ms: 120_000,
            ..Limits::default()
        };
        t.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        holding.push(fabric.submit(t).await);
    }
    // Tenant b's tasks come after all of a's in line.
    let mut echoes: Vec<TaskId> = Vec::new();
    for i in 0..4 {
        let t = NewTask::new("b", echo, format!("echo {i}").into_bytes());
        echoes.push(fabric.submit(t).await);
    }

    let all_of_b = async {
        for id in &echoes {
            assert_eq!(fabric.wait(id).await.state, TaskState::Succeeded);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_of_b)
        .await
        .expect("b's tasks did not finish while a's run: a holds every worker");
    let mut unfinished = 0;
    for id in &holding {
        if !fabric.get(id).await.state.is_terminal() {
            unfinished += 1;
        }
    }
    assert_eq!(unfinished, holding.len(), "a's tasks still run or queue");

    // The queued ones first: cancelling a running one frees a slot a queued one would take.
    let mut by_state = Vec::new();
    for id in &holding {
        by_state.push((fabric.get(id).await.state != TaskState::Queued, id.clone()));
    }
    by_state.sort();
    for (_, id) in by_state {
        fabric.scheduler.cancel(None, id).await.unwrap();
    }
    let mut a = Vec::new();
    for id in &holding {
        let done = fabric.wait(id).await;
        assert_eq!(done.state, TaskState::Cancelled);
        a.push(done);
    }
    let ran = a.iter().filter(|t| !t.attempts.is_empty()).count();
    assert_eq!(
        ran, CAP as usize,
        "exactly the cap of a's tasks were started"
    );
    assert_eq!(most_at_once(&a), CAP as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cap_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = fabric_scheduler::Scheduler::start(
        fabric_scheduler::SchedulerConfig {
            tenant_max_running: Some(0),
            ..config(2)
        },
        open_store(dir.path()),
        sandbox(),
        std::sync::Arc::new(fabric_scheduler::SystemClock),
    );
    let err = refused.expect_err("a cap of 0 would never run anything");
    assert!(
        err.to_string()
            .contains("tenant_max_running must be at least 1"),
        "{err}"
    );
}
