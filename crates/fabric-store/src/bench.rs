//! The store benchmark every backend runs (criterion): insert, claim and complete per
//! batch size, and many concurrent single-task inserts. A backend's `benches/store.rs`
//! opens its store and calls [`store_ops`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use fabric_types::{Attempt, ModuleId, ModuleKind, Outcome, TaskState};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

use crate::{
    ClaimedTask, Completion, ModulePutParams, NewTask, Next, Store, TaskClaimParams,
    TaskCompleteParams, TaskInsertParams,
};

const BATCHES: [usize; 3] = [1, 100, 1_000];

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask::new("bench", ModuleId::of(b"echo"), format!("input {i}")))
        .collect()
}

/// Stores the module the benchmark's tasks name.
async fn put_module(store: &dyn Store) {
    let params = ModulePutParams {
        tenant: "bench".into(),
        id: ModuleId::of(b"echo"),
        name: None,
        bytes: b"echo".to_vec(),
        kind: ModuleKind::Module,
        now: OffsetDateTime::now_utc(),
    };
    store.module_put(params).await.unwrap();
}

async fn insert(store: &dyn Store, n: usize) {
    let params = TaskInsertParams {
        tasks: tasks(n),
        now: OffsetDateTime::now_utc(),
    };
    store.task_insert(params).await.unwrap();
}

async fn claim(store: &dyn Store, n: usize) -> Vec<ClaimedTask> {
    let params = TaskClaimParams {
        node: "bench".into(),
        max: n,
        lease: Duration::from_secs(60),
        now: OffsetDateTime::now_utc(),
        tenant_cap: None,
    };
    let claimed = store.task_claim(params).await.unwrap().tasks;
    assert_eq!(claimed.len(), n);
    claimed
}

async fn complete(store: &dyn Store, claimed: Vec<ClaimedTask>) {
    let completions = claimed
        .into_iter()
        .map(|c| Completion {
            children: Vec::new(),
            attempt_id: c.attempt_id,
            attempt: Attempt::new(Outcome::Ok),
            next: Next::Finish(TaskState::Succeeded),
        })
        .collect();
    let params = TaskCompleteParams {
        completions,
        now: OffsetDateTime::now_utc(),
    };
    store.task_complete(params).await.unwrap();
}

/// One of the three writes a task's life takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Insert,
    Claim,
    Complete,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Insert => "insert",
            Step::Claim => "claim",
            Step::Complete => "complete",
        }
    }
}

/// Inserts, claims and completes `n` tasks, leaving the queue empty as it found it; the
/// time `timed` took.
async fn round(store: &dyn Store, n: usize, timed: Step) -> Duration {
    let start = Instant::now();
    insert(store, n).await;
    let inserted = Instant::now();
    let claimed = claim(store, n).await;
    let claimed_at = Instant::now();
    complete(store, claimed).await;
    match timed {
        Step::Insert => inserted - start,
        Step::Claim => claimed_at - inserted,
        Step::Complete => claimed_at.elapsed(),
    }
}

/// Benchmarks `store` (empty, and used by nothing else) in the group `store`: insert, claim
/// and complete per batch size, each timed alone while the others keep the queue empty so
/// every iteration sees the same database; then `n` callers each inserting one task at once
/// (on a backend with group commit they share transactions).
pub fn store_ops(c: &mut Criterion, runtime: &Runtime, store: Arc<dyn Store>) {
    let shared = Arc::clone(&store);
    let store = &*store;
    runtime.block_on(put_module(store));

    let mut group = c.benchmark_group("store");
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        for step in [Step::Insert, Step::Claim, Step::Complete] {
            group.bench_with_input(BenchmarkId::new(step.name(), n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            spent += round(store, n, step).await;
                        }
                        spent
                    })
                })
            });
        }
    }
    // `n` callers each insert one task at once.
    for n in [10usize, 100] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("insert_concurrent_single", n),
            &n,
            |b, &n| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            let start = Instant::now();
                            let mut callers = tokio::task::JoinSet::new();
                            for _ in 0..n {
                                let shared = Arc::clone(&shared);
                                callers.spawn(async move { insert(&*shared, 1).await });
                            }
                            callers.join_all().await;
                            spent += start.elapsed();
                            let claimed = claim(store, n).await;
                            complete(store, claimed).await;
                        }
                        spent
                    })
                })
            },
        );
    }
    group.finish();
}
