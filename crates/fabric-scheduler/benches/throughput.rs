//! End-to-end library throughput: echo tasks inserted in batches of 1,000 into a SQLite
//! store on disk, drained by the scheduler through the real sandbox, until every one has
//! succeeded. Reported as tasks per second.
//!
//! `cargo bench -p fabric-scheduler --bench throughput`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_sandbox::{Sandbox, SandboxConfig};
use fabric_scheduler::{Scheduler, SchedulerConfig, SystemClock};
use fabric_store::{ModuleKind, ModulePutParams, NewTask, Store, TaskInsertParams};
use fabric_store_sqlite::{SqliteOptions, SqliteStore};
use fabric_types::{ModuleId, TaskState};
use time::OffsetDateTime;
use tokio::sync::broadcast;

const TASKS: u64 = 10_000;
const BATCH: usize = 1_000;
const WORKERS: u32 = 64;

fn drain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("fabric.db"), SqliteOptions::default()).unwrap(),
    );
    let sandbox = Arc::new(
        Sandbox::new(SandboxConfig {
            slots: WORKERS,
            ..SandboxConfig::default()
        })
        .unwrap(),
    );
    let echo = ModuleId::of(fabric_agents::p1::ECHO);
    let scheduler = runtime.block_on(async {
        let put = ModulePutParams {
            tenant: "bench".into(),
            id: echo,
            name: None,
            bytes: fabric_agents::p1::ECHO.to_vec(),
            kind: ModuleKind::Module,
            now: OffsetDateTime::now_utc(),
        };
        store.module_put(put).await.unwrap();
        let config = SchedulerConfig {
            workers: WORKERS,
            ..SchedulerConfig::new("bench")
        };
        Scheduler::start(config, store.clone(), sandbox, Arc::new(SystemClock)).unwrap()
    });

    let mut group = c.benchmark_group("scheduler");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(TASKS));
    group.bench_function("echo_tasks_end_to_end", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    // Counted from the scheduler's events: polling the store's counts
                    // would scan every task ever stored and measure that instead.
                    let mut events = scheduler.subscribe();
                    let started = Instant::now();
                    for _ in 0..TASKS as usize / BATCH {
                        let tasks = (0..BATCH)
                            .map(|i| NewTask::new("bench", echo, format!("task {i}")))
                            .collect();
                        store
                            .task_insert(TaskInsertParams {
                                tasks,
                                now: OffsetDateTime::now_utc(),
                            })
                            .await
                            .unwrap();
                        scheduler.wake();
                    }
                    let mut succeeded = 0;
                    while succeeded < TASKS {
                        match events.recv().await {
                            Ok(event) => {
                                assert_ne!(event.state, TaskState::Failed, "an echo task failed");
                                succeeded += u64::from(event.state == TaskState::Succeeded);
                            }
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                panic!("the bench fell {missed} events behind the scheduler")
                            }
                            Err(broadcast::error::RecvError::Closed) => panic!("scheduler stopped"),
                        }
                    }
                    elapsed += started.elapsed();
                }
                elapsed
            })
        })
    });
    group.finish();
    runtime.block_on(scheduler.shutdown(Duration::from_secs(5)));
}

criterion_group!(throughput, drain);
criterion_main!(throughput);
