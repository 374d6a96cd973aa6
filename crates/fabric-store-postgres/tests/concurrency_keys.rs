//! Concurrency keys on a shared database: nodes claiming at once never run more tasks of a
//! tenant's key than its limit, while tasks without the key keep flowing.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fabric_store::testkit::{at, claim, complete, keyed, new_task};
use fabric_store::{NewTask, Next, StatsParams, Store, TaskInsertParams};
use fabric_store_postgres::PostgresStore;
use fabric_types::{Outcome, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_claiming_at_once_never_pass_a_concurrency_limit() {
    const LIMIT: u32 = 3;
    const KEYED: usize = 90;
    const PLAIN: usize = 30;
    let (a, guard) = util::store().await;
    let b = util::connect(util::options(&guard.schema)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    // Keyed tasks first in line, a plain one after every third.
    let mut tasks: Vec<NewTask> = Vec::new();
    for i in 0..KEYED {
        tasks.push(keyed("acme", &format!("k{i}"), "model-api", LIMIT));
        if i % 3 == 2 {
            tasks.push(new_task("acme", &format!("p{i}")));
        }
    }
    a.task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .unwrap();

    let sql = format!(
        "SELECT count(*) FROM {}.tasks WHERE state = 'running' AND concurrency_key = 'model-api'",
        guard.schema
    );
    let done = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let claim_loop = |store: Arc<PostgresStore>, node: &'static str| {
        let (done, peak, sql) = (done.clone(), peak.clone(), sql.clone());
        tokio::spawn(async move {
            let raw = util::raw(&util::url()).await.unwrap();
            let until = Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::SeqCst) < KEYED + PLAIN {
                assert!(
                    Instant::now() < until,
                    "the tasks were not all claimed in time"
                );
                let claimed = claim(&*store, node, 2, at(1)).await;
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                // One statement: a consistent count of what runs under the key right now.
                let running: i64 = raw.query_one(&sql, &[]).await.unwrap().get(0);
                peak.fetch_max(running, Ordering::SeqCst);
                assert!(
                    running <= i64::from(LIMIT),
                    "{running} tasks run under a key whose limit is {LIMIT}"
                );
                tokio::time::sleep(Duration::from_millis(3)).await;
                for task in claimed {
                    let next = Next::Finish(TaskState::Succeeded);
                    let c = complete(&*store, &task.attempt_id, Outcome::Ok, next, at(2)).await;
                    assert!(c.accepted);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let loops = [
        claim_loop(a.clone(), "node-a1"),
        claim_loop(a.clone(), "node-a2"),
        claim_loop(b.clone(), "node-b1"),
        claim_loop(b.clone(), "node-b2"),
    ];
    for handle in loops {
        handle.await.unwrap();
    }
    let stats = a.stats(StatsParams::default()).await.unwrap();
    assert_eq!(stats.succeeded, (KEYED + PLAIN) as u64, "{stats:?}");
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (2..=i64::from(LIMIT)).contains(&peak),
        "four claimers should have run the key at up to its limit at once, not {peak}"
    );
    let raw = util::raw(&util::url()).await.unwrap();
    let row = raw
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT task_id) FROM {}.attempts",
                guard.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (attempts, tasks): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (attempts, tasks),
        ((KEYED + PLAIN) as i64, (KEYED + PLAIN) as i64),
        "one attempt per task"
    );
}
