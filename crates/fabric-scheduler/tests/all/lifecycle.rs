//! Tasks through their whole life: success, retries, limits, priorities, cancellation,
//! delayed and bounded work, shutdown and recovery.

use std::sync::Arc;
use std::time::Duration;

use fabric_scheduler::ManualClock;
use fabric_store::TaskClaimParams;
use fabric_types::{Limits, Priority, RetryPolicy, TaskState};
use time::OffsetDateTime;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_task_succeeds_with_its_output() {
    let fabric = Fabric::start(config(4));
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let id = fabric.submit(task(echo, "hello, queue")).await;
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(outcomes(&done), ["ok"]);
    assert_eq!(
        done.attempts[0].result.as_ref().unwrap().output,
        b"hello, queue"
    );
    assert!(done.started_at.is_some() && done.finished_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_all_succeed() {
    let fabric = Fabric::start(config(16));
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(fabric.submit(task(echo, &format!("task {i}"))).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let done = fabric.wait(id).await;
        assert_eq!(done.state, TaskState::Succeeded);
        assert_eq!(
            done.attempts[0].result.as_ref().unwrap().output,
            format!("task {i}").as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_until_max_attempts_then_fails() {
    let fabric = Fabric::start(config(2));
    let strict = fabric.module(fabric_agents::p1::STRICT).await;
    let mut t = task(strict, "not json");
    t.retry = RetryPolicy {
        max_attempts: 3,
        backoff_ms: 20,
        max_backoff_ms: 50,
        ..RetryPolicy::default()
    };
    let id = fabric.submit(t).await;
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Failed);
    assert_eq!(outcomes(&done), ["exit", "exit", "exit"]);
    assert!(
        done.attempts
            .iter()
            .all(|a| a.result.as_ref().unwrap().exit_code == Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_fuel_is_not_retried() {
    let fabric = Fabric::start(config(2));
    let looping = fabric.module(&fabric_agents::fixture("loop_forever")).await;
    let mut t = task(looping, "");
    t.limits = Limits {
        fuel: 100_000,
        ..Limits::default()
    };
    let id = fabric.submit(t).await;
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Failed);
    assert_eq!(outcomes(&done), ["out_of_fuel"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_cannot_be_compiled_fails_the_task_as_invalid() {
    // A store only takes tasks whose module it holds; one whose stored bytes do not
    // compile (stored without the server's validation) is the task's own fault.
    let fabric = Fabric::start(config(2));
    let bytes = b"\0asm\x01\0\0\0\xffnot a section".to_vec();
    let module = fabric_types::ModuleId::of(&bytes);
    fabric
        .store
        .module_put(fabric_store::ModulePutParams {
            tenant: TENANT.into(),
            id: module,
            name: None,
            bytes,
            kind: fabric_store::ModuleKind::Module,
            now: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let id = fabric.submit(task(module, "")).await;
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Failed);
    assert_eq!(outcomes(&done), ["invalid"]);
    let error = done.attempts[0].result.as_ref().unwrap().error.as_deref();
    assert!(error.is_some_and(|e| !e.is_empty()), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_work_queued_behind_a_busy_worker_runs_before_earlier_low_work() {
    let fabric = Fabric::start(config(1));
    let sleep = fabric.module(fabric_agents::p1::SLEEP).await;
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let busy = fabric.submit(task(sleep, "300")).await;
    // Wait until the only worker is busy, then queue low work before critical work.
    let mut events = fabric.scheduler.subscribe();
    while fabric.get(&busy).await.state != TaskState::Running {
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    let mut low = task(echo, "low");
    low.priority = Priority::Low;
    let low = fabric.submit(low).await;
    let mut critical = task(echo, "critical");
    critical.priority = Priority::Critical;
    let critical = fabric.submit(critical).await;

    let (low, critical) = (fabric.wait(&low).await, fabric.wait(&critical).await);
    // Attempt ids order claims, also within one millisecond (timestamps do not).
    let started = |t: &fabric_store::TaskRecord| t.attempts[0].id.clone();
    assert!(
        started(&critical) < started(&low),
        "critical {:?} low {:?}",
        started(&critical),
        started(&low)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_cancel_never_runs() {
    let fabric = Fabric::start(config(1));
    let sleep = fabric.module(fabric_agents::p1::SLEEP).await;
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let busy = fabric.submit(task(sleep, "200")).await;
    let queued = fabric.submit(task(echo, "never")).await;
    let cancelled = fabric
        .scheduler
        .cancel(None, queued.clone())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(cancelled.state, TaskState::Cancelled | TaskState::Running),
        "{:?}",
        cancelled.state
    );
    fabric.wait(&busy).await;
    let done = fabric.wait(&queued).await;
    if cancelled.state == TaskState::Cancelled {
        assert!(
            done.attempts.is_empty(),
            "a cancelled queued task never ran"
        );
    }
    assert_eq!(done.state, TaskState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cancel_ends_within_about_a_tick() {
    let fabric = Fabric::start(config(1));
    let looping = fabric.module(&fabric_agents::fixture("loop_forever")).await;
    let id = fabric.submit(task(looping, "")).await;
    let mut events = fabric.scheduler.subscribe();
    while fabric.get(&id).await.state != TaskState::Running {
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    let asked = std::time::Instant::now();
    fabric.scheduler.cancel(None, id.clone()).await.unwrap();
    let done = fabric.wait(&id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(done.state, TaskState::Cancelled);
    assert_eq!(outcomes(&done), ["cancelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_at_is_honoured_to_the_millisecond() {
    let fabric = Fabric::start(config(2));
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let run_at = OffsetDateTime::now_utc() + Duration::from_millis(400);
    let mut t = task(echo, "later");
    t.run_at = Some(run_at);
    let id = fabric.submit(t).await;
    assert_eq!(fabric.get(&id).await.state, TaskState::Scheduled);
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Succeeded);
    let run_at_ms = fabric_store::to_millis(run_at);
    let claimed_ms = fabric_store::to_millis(done.attempts[0].claimed_at);
    assert!(
        claimed_ms >= run_at_ms,
        "claimed {claimed_ms} before run_at {run_at_ms}"
    );
    assert!(
        claimed_ms - run_at_ms < 100,
        "claimed {} ms late",
        claimed_ms - run_at_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_expires_the_task_without_running_it() {
    let start = OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(start));
    let fabric = Fabric::start_with_clock(config(1), clock.clone());
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let mut t = task(echo, "too late");
    t.run_at = Some(start + Duration::from_millis(300));
    t.deadline = Some(start + Duration::from_millis(100));
    let id = fabric.submit(t).await;
    // Past the deadline, before `run_at`: the scheduler's clock never reaches `run_at`.
    clock.advance(Duration::from_millis(200));
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Expired);
    assert!(done.attempts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_task_is_announced_by_an_event() {
    let fabric = Fabric::start(config(1));
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    let mut events = fabric.scheduler.subscribe();
    let mut t = task(echo, "never runs");
    t.run_at = Some(OffsetDateTime::now_utc() + Duration::from_secs(3600));
    t.deadline = Some(OffsetDateTime::now_utc() + Duration::from_millis(100));
    let id = fabric.submit(t).await;
    // Maintenance runs every 50 ms: the event comes well within two seconds.
    let event = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let event = events.recv().await.expect("events");
            if event.task_id == id {
                return event;
            }
        }
    })
    .await
    .expect("no event for the expired task");
    assert_eq!(event.state, TaskState::Expired);
    assert_eq!(event.tenant, TENANT);
    assert!(event.attempt.is_none());
    assert_eq!(fabric.get(&id).await.state, TaskState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_requeues_running_work_uncharged_and_a_restart_finishes_it() {
    // One tenant's eight tasks all running at once: no tenant cap below the workers.
    let config = || fabric_scheduler::SchedulerConfig {
        tenant_max_running: Some(8),
        ..config(8)
    };
    let fabric = Fabric::start(config());
    let sleep = fabric.module(fabric_agents::p1::SLEEP).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(fabric.submit(task(sleep, "5000")).await);
    }
    let mut events = fabric.scheduler.subscribe();
    while fabric.scheduler.running() < 8 {
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    let asked = std::time::Instant::now();
    fabric.scheduler.shutdown(Duration::from_millis(200)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    for id in &ids {
        let task = fabric.get(id).await;
        assert_eq!(task.state, TaskState::Queued, "back in the queue");
        assert!(
            task.attempts.is_empty(),
            "the interrupted attempt is not charged"
        );
    }

    let restarted = fabric_scheduler::Scheduler::start(
        config(),
        fabric.store.clone(),
        sandbox(),
        Arc::new(fabric_scheduler::SystemClock),
    )
    .unwrap();
    let fabric = Fabric {
        scheduler: restarted,
        ..fabric
    };
    for id in &ids {
        let done = fabric.wait(id).await;
        assert_eq!(done.state, TaskState::Succeeded);
        assert_eq!(outcomes(&done), ["ok"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_by_a_dead_node_is_rescued_and_retried() {
    let fabric = Fabric::start(config(2));
    let echo = fabric.module(fabric_agents::p1::ECHO).await;
    // A node that claims the task and then dies: its lease runs out.
    fabric.scheduler.shutdown(Duration::ZERO).await;
    let mut rescued = task(echo, "rescued");
    rescued.retry = RetryPolicy {
        backoff_ms: 0,
        ..RetryPolicy::default()
    };
    let id = insert(&*fabric.store, rescued).await;
    let claimed_at = OffsetDateTime::now_utc();
    let lease = Duration::from_millis(300);
    let claim = TaskClaimParams {
        node: "dead-node".into(),
        max: 1,
        lease,
        now: claimed_at,
        tenant_cap: None,
    };
    assert_eq!(fabric.store.task_claim(claim).await.unwrap().tasks.len(), 1);

    let mut cfg = config(2);
    cfg.node = "live-node".into();
    let clock = Arc::new(ManualClock::new(claimed_at));
    let live =
        fabric_scheduler::Scheduler::start(cfg, fabric.store.clone(), sandbox(), clock.clone())
            .unwrap();
    let fabric = Fabric {
        scheduler: live,
        ..fabric
    };
    // The live node's clock passes the end of the dead node's lease.
    clock.advance(lease + Duration::from_millis(1));
    let done = fabric.wait(&id).await;
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(outcomes(&done), ["lost", "ok"]);
    assert_eq!(done.attempts[0].node, "dead-node");
    assert_eq!(done.attempts[1].node, "live-node");
}
