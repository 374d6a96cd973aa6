//! Concurrency keys: a key's running tasks never pass its limit, the tasks held back stay
//! queued in their places, and tasks without the key (or with another) are not held back.

use std::sync::Arc;

use fabric_types::{Concurrency, Outcome, TaskState};

use super::{at, claim, complete, get, ids, new_task};
use crate::{NewTask, Next, Store, TaskId, TaskInsertParams};

/// A task of `tenant` with the concurrency key `key` and `limit`.
pub fn keyed(tenant: &str, input: &str, key: &str, limit: u32) -> NewTask {
    let mut task = new_task(tenant, input);
    task.concurrency = Some(Concurrency {
        key: key.to_owned(),
        limit,
    });
    task
}

async fn insert_all(store: &dyn Store, tasks: Vec<NewTask>) -> Vec<TaskId> {
    store
        .task_insert(TaskInsertParams { tasks, now: at(0) })
        .await
        .expect("task_insert")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// At most `limit` tasks of a tenant's key run; another tenant's key of the same name and
/// another key are counted apart; a finished task makes room for the next in line.
pub async fn concurrency_key_caps_running(store: Arc<dyn Store>) {
    let store = &*store;
    let mut tasks: Vec<NewTask> = (0..5)
        .map(|i| keyed("acme", &format!("api{i}"), "api", 2))
        .collect();
    tasks.push(new_task("acme", "plain0"));
    tasks.push(keyed("acme", "other0", "other", 1));
    tasks.push(keyed("acme", "other1", "other", 1));
    tasks.push(keyed("globex", "theirs", "api", 1));
    tasks.push(new_task("acme", "plain1"));
    let t = insert_all(store, tasks).await;
    let (api, plain0, other, theirs, plain1) = (&t[0..5], &t[5], &t[6..8], &t[8], &t[9]);

    let mut got = ids(&claim(store, "n", 100, at(1)).await);
    got.sort();
    let mut expected = vec![
        api[0].clone(),
        api[1].clone(),
        plain0.clone(),
        other[0].clone(),
        theirs.clone(),
        plain1.clone(),
    ];
    expected.sort();
    assert_eq!(
        got, expected,
        "two of api, one of other, globex's own api, the plain tasks"
    );
    for held in api[2..].iter().chain(&other[1..]) {
        let task = get(store, held).await;
        assert_eq!(task.state, TaskState::Queued, "held back, still queued");
        assert!(
            task.attempts.is_empty(),
            "holding a task back counts no attempt"
        );
    }
    assert!(
        claim(store, "n", 100, at(2)).await.is_empty(),
        "every key is at its limit"
    );

    // The first api task ends: the next api task in line starts, and only one.
    let first = get(store, &api[0]).await.attempts[0].id.clone();
    complete(
        store,
        &first,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(3),
    )
    .await;
    let next = claim(store, "n", 100, at(4)).await;
    assert_eq!(ids(&next), vec![api[2].clone()], "the next in line, alone");
    assert_eq!(
        next[0].concurrency,
        Some(Concurrency {
            key: "api".into(),
            limit: 2
        }),
        "a claimed task carries its key"
    );

    // A retry that waits frees its slot too.
    let second = get(store, &api[1]).await.attempts[0].id.clone();
    complete(
        store,
        &second,
        Outcome::Trap,
        Next::Retry { run_at: at(5) },
        at(5),
    )
    .await;
    let next = ids(&claim(store, "n", 100, at(5)).await);
    assert_eq!(next.len(), 1, "one slot came free: {next:?}");
    assert!(
        next[0] == api[1] || next[0] == api[3],
        "an api task took the free slot: {next:?}"
    );
}

/// A long line of tasks whose key is full does not hold back the tasks behind it, and a
/// task with a key is claimed as soon as its key has room.
pub async fn concurrency_key_does_not_hold_back_others(store: Arc<dyn Store>) {
    let store = &*store;
    let mut tasks: Vec<NewTask> = (0..300)
        .map(|i| keyed("acme", &format!("k{i}"), "api", 1))
        .collect();
    tasks.extend((0..5).map(|i| new_task("acme", &format!("plain{i}"))));
    let t = insert_all(store, tasks).await;
    let got = ids(&claim(store, "n", 3, at(1)).await);
    assert_eq!(
        got.len(),
        3,
        "the claim went past the held tasks to the plain ones: {got:?}"
    );
    assert!(got.contains(&t[0]), "the first keyed task runs");
    assert_eq!(
        got.iter().filter(|id| t[300..].contains(id)).count(),
        2,
        "and two plain tasks behind 299 held ones"
    );
    let rest = ids(&claim(store, "n", 100, at(2)).await);
    assert_eq!(
        rest,
        t[302..].to_vec(),
        "the other plain tasks, and no keyed one"
    );
}

/// Tasks of one key may name different limits: each starts only while fewer than its own
/// limit run.
pub async fn concurrency_limit_is_the_tasks_own(store: Arc<dyn Store>) {
    let store = &*store;
    let t = insert_all(
        store,
        vec![
            keyed("acme", "a", "api", 1),
            keyed("acme", "b", "api", 1),
            keyed("acme", "c", "api", 3),
        ],
    )
    .await;
    let got = ids(&claim(store, "n", 10, at(1)).await);
    assert_eq!(
        got,
        vec![t[0].clone(), t[2].clone()],
        "b waits for a; c's limit is 3"
    );
    assert_eq!(get(store, &t[1]).await.state, TaskState::Queued);
}
