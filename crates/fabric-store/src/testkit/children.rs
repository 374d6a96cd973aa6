//! Child tasks: inserted with the completion that succeeds and only then, fenced by the
//! attempt, refused as a whole (failing that completion alone), cancelled with their
//! ancestors; and the listing filters (`parent`, `module`, `labels`, `state`).

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_types::workflow::{MAX_CHILDREN_PER_ATTEMPT, MAX_TASK_DEPTH};
use fabric_types::{Attempt, ModuleId, ModuleKind, Outcome, TaskState};

use super::workflow::{after, complete_with, ok_with};
use super::{LEASE, at, claim, get, insert, new_task};
use crate::workflow::CHILDREN_REFUSED;
use crate::{
    Completion, ModulePutParams, NewTask, Next, Store, TaskCancelParams, TaskCompleteParams,
    TaskGetParams, TaskId, TaskListParams, TaskRescueParams,
};

const SUCCEEDED: Next = Next::Finish(TaskState::Succeeded);

/// A child with a given id (as the guest holds it).
fn child(id: &str, input: &str) -> NewTask {
    let mut task = new_task("acme", input);
    task.id = Some(TaskId::from(id));
    task
}

async fn exists(store: &dyn Store, id: &str) -> bool {
    store
        .task_get(TaskGetParams {
            tenant: None,
            id: TaskId::from(id),
        })
        .await
        .unwrap()
        .is_some()
}

/// The ids of a listing, newest first.
async fn list(store: &dyn Store, params: TaskListParams) -> Vec<TaskId> {
    store
        .task_list(params)
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// A succeeding completion inserts its children in its transaction, under their given ids,
/// with `parent` and `depth` set; a child may run after an earlier sibling.
pub async fn children_inserted_on_success(store: Arc<dyn Store>) {
    let store = &*store;
    let parent = insert(store, new_task("acme", "planner"), at(0)).await;
    let c = claim(store, "n", 1, at(1)).await.remove(0);
    assert_eq!(c.depth, 0);
    let mut other_tenant = child("01CHILDA000000000000000000", "a");
    other_tenant.tenant = "globex".into(); // the store makes it the parent's tenant
    let mut join = child("01CHILDB000000000000000000", "b");
    join.after = vec![TaskId::from("01CHILDA000000000000000000")];
    join.pass_outputs = true;
    let done = complete_with(
        store,
        &c.attempt_id,
        ok_with(b"planned"),
        SUCCEEDED,
        vec![other_tenant, join],
        at(2),
    )
    .await;
    assert!(done.accepted);
    assert_eq!(done.state, Some(TaskState::Succeeded));
    let a = get(store, &TaskId::from("01CHILDA000000000000000000")).await;
    assert_eq!(a.tenant, "acme");
    assert_eq!(a.parent, Some(parent.clone()));
    assert_eq!(a.depth, 1);
    assert_eq!(a.state, TaskState::Queued);
    let b = get(store, &TaskId::from("01CHILDB000000000000000000")).await;
    assert_eq!(b.state, TaskState::Waiting);
    assert_eq!(b.depth, 1);
    let claimed = claim(store, "n", 10, at(3)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task_id, a.id);
    assert_eq!(claimed[0].depth, 1, "the worker sees the child's depth");
    let children = list(
        store,
        TaskListParams {
            tenant: Some("acme".into()),
            parent: Some(parent.clone()),
            limit: 10,
            ..TaskListParams::default()
        },
    )
    .await;
    assert_eq!(children, vec![b.id.clone(), a.id.clone()]);
    // A grandchild is one deeper.
    complete_with(
        store,
        &claimed[0].attempt_id,
        ok_with(b"a done"),
        SUCCEEDED,
        vec![child("01GRANDCHILD00000000000000", "g")],
        at(4),
    )
    .await;
    let g = get(store, &TaskId::from("01GRANDCHILD00000000000000")).await;
    assert_eq!((g.depth, g.parent), (2, Some(a.id.clone())));
    assert_eq!(get(store, &b.id).await.state, TaskState::Queued);
}

/// Children are dropped when the completion does not end the task `succeeded`: a retry, a
/// failure, a requeue, a cancel.
pub async fn children_dropped_unless_success(store: Arc<dyn Store>) {
    let store = &*store;
    let mut t = new_task("acme", "x");
    t.retry.max_attempts = 5;
    insert(store, t, at(0)).await;
    let steps = [
        (Outcome::Trap, Next::Retry { run_at: at(0) }),
        (Outcome::Ok, Next::Requeue),
        (Outcome::Exit, Next::Finish(TaskState::Failed)),
    ];
    for (i, (outcome, next)) in steps.into_iter().enumerate() {
        let c = claim(store, "n", 1, at(10 * i as i64 + 10)).await.remove(0);
        let id = format!("01DROPPED{i}0000000000000000");
        let done = complete_with(
            store,
            &c.attempt_id,
            Attempt::new(outcome),
            next,
            vec![child(&id, "never")],
            at(10 * i as i64 + 11),
        )
        .await;
        assert!(done.accepted);
        assert!(!exists(store, &id).await, "{next:?} created its children");
    }
    // A cancel requested while it ran: even a success drops them.
    let t = insert(store, new_task("acme", "y"), at(100)).await;
    let c = claim(store, "n", 1, at(101)).await.remove(0);
    store
        .task_cancel(TaskCancelParams {
            tenant: None,
            id: t,
            now: at(102),
        })
        .await
        .unwrap();
    complete_with(
        store,
        &c.attempt_id,
        ok_with(b""),
        SUCCEEDED,
        vec![child("01DROPPEDCANCEL00000000000", "never")],
        at(103),
    )
    .await;
    assert!(!exists(store, "01DROPPEDCANCEL00000000000").await);
}

/// A completion fenced out (its attempt was rescued) creates no children.
pub async fn children_fenced_after_rescue(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert(store, new_task("acme", "x"), at(0)).await;
    let c = claim(store, "n", 1, at(0)).await.remove(0);
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap();
    let rescued = store
        .task_rescue(TaskRescueParams {
            now: at(lease_ms + 1),
            max: 10,
            jitter: |b| b,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let done = complete_with(
        store,
        &c.attempt_id,
        ok_with(b"late"),
        SUCCEEDED,
        vec![child("01FENCED000000000000000000", "never")],
        at(lease_ms + 2),
    )
    .await;
    assert!(!done.accepted);
    assert!(!exists(store, "01FENCED000000000000000000").await);
    assert_ne!(get(store, &id).await.state, TaskState::Succeeded);
}

/// Children that cannot be inserted fail their completion alone: outcome `invalid`, an
/// error naming the child, the task `failed`, no child stored; the other completion of the
/// same call inserts its children.
pub async fn children_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let mut existing = new_task("acme", "existing");
    existing.run_at = Some(at(100_000_000)); // stored, and never claimed here
    let existing = insert(store, existing, at(0)).await;
    let missing_module = {
        let mut t = child("01BADMODULE000000000000000", "m");
        t.module = ModuleId::of(b"not stored");
        t
    };
    let unknown_after = {
        let mut t = child("01BADAFTER0000000000000000", "u");
        t.after = vec![TaskId::from("01NOSUCHTASK0000000000000")];
        t
    };
    let too_many: Vec<NewTask> = (0..=MAX_CHILDREN_PER_ATTEMPT)
        .map(|i| child(&format!("01MANY{i:020}"), "many"))
        .collect();
    let cases: Vec<(Vec<NewTask>, &str)> = vec![
        (
            vec![child("01OKSIBLING000000000000000", "ok"), missing_module],
            "children[1].module",
        ),
        (vec![unknown_after], "children[0].after"),
        (vec![child(existing.as_str(), "dup")], "children[0].id"),
        (too_many, "1001 children"),
    ];
    for (n, (children, names)) in cases.into_iter().enumerate() {
        let first: Vec<String> = children
            .iter()
            .filter_map(|c| c.id.as_ref().map(|id| id.to_string()))
            .filter(|id| *id != existing.as_str())
            .take(2)
            .collect();
        let t = n as i64 * 100 + 100;
        let bad = insert(store, new_task("acme", "bad"), at(t)).await;
        let good = insert(store, new_task("acme", "good"), at(t)).await;
        let claimed = claim(store, "n", 2, at(t + 1)).await;
        assert_eq!(claimed.len(), 2);
        let good_child = format!("01GOODCHILD{n}00000000000000");
        let completions = claimed
            .iter()
            .map(|c| Completion {
                attempt_id: c.attempt_id.clone(),
                attempt: ok_with(b"out"),
                next: SUCCEEDED,
                children: if c.task_id == bad {
                    children.clone()
                } else {
                    vec![child(&good_child, "fine")]
                },
            })
            .collect();
        let done = store
            .task_complete(TaskCompleteParams {
                completions,
                now: at(t + 2),
            })
            .await
            .unwrap();
        assert!(done.iter().all(|d| d.accepted));
        let bad = get(store, &bad).await;
        assert_eq!(bad.state, TaskState::Failed, "case {names}");
        let attempt = bad.attempts[0].result.as_ref().unwrap();
        assert_eq!(attempt.outcome, Outcome::Invalid);
        let error = attempt.error.as_deref().unwrap();
        assert!(
            error.starts_with(CHILDREN_REFUSED) && error.contains(names),
            "case {names}: {error}"
        );
        assert_eq!(attempt.output, b"out", "what the attempt wrote is kept");
        for id in first {
            assert!(!exists(store, &id).await, "case {names}: child {id} exists");
        }
        assert_eq!(get(store, &good).await.state, TaskState::Succeeded);
        assert!(
            exists(store, &good_child).await,
            "the other completion's child"
        );
        // Run the good child so the next case claims only its own tasks.
        let c = claim(store, "n", 1, at(t + 3)).await.remove(0);
        complete_with(
            store,
            &c.attempt_id,
            ok_with(b""),
            SUCCEEDED,
            vec![],
            at(t + 4),
        )
        .await;
    }

    // Depth: a task of the deepest depth may not have children.
    let mut parent = insert(store, new_task("acme", "d0"), at(1_000)).await;
    for depth in 1..=MAX_TASK_DEPTH {
        let mut t = new_task("acme", "deep");
        t.parent = Some(parent.clone());
        if depth < MAX_TASK_DEPTH {
            t.run_at = Some(at(1_000_000));
        }
        parent = insert(store, t, at(1_000)).await;
    }
    assert_eq!(get(store, &parent).await.depth, MAX_TASK_DEPTH);
    let claimed = claim(store, "n", 10, at(1_001)).await;
    let deepest = claimed.iter().find(|c| c.task_id == parent).unwrap();
    assert_eq!(deepest.depth, MAX_TASK_DEPTH);
    complete_with(
        store,
        &deepest.attempt_id,
        ok_with(b""),
        SUCCEEDED,
        vec![child("01TOODEEP00000000000000000", "deep")],
        at(1_002),
    )
    .await;
    let task = get(store, &parent).await;
    assert_eq!(task.state, TaskState::Failed);
    let error = task.attempts[0]
        .result
        .as_ref()
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(
        error.starts_with("child tasks refused: children[0].parent:"),
        "{error}"
    );
    assert!(!exists(store, "01TOODEEP00000000000000000").await);
}

/// Cancelling a task cancels its unfinished descendants, transitively, whatever its own
/// state: waiting and queued ones at once (their error naming it), running ones by
/// request.
pub async fn cancel_cascades_to_descendants(store: Arc<dyn Store>) {
    let store = &*store;
    let root = insert(store, new_task("acme", "root"), at(0)).await;
    let c = claim(store, "n", 1, at(1)).await.remove(0);
    let mut waiting = child("01KIDWAIT00000000000000000", "w");
    waiting.after = vec![TaskId::from("01KIDRUN000000000000000000")];
    complete_with(
        store,
        &c.attempt_id,
        ok_with(b""),
        SUCCEEDED,
        vec![
            child("01KIDRUN000000000000000000", "r"),
            waiting,
            child("01KIDQUEUED000000000000000", "q"),
        ],
        at(2),
    )
    .await;
    let claimed = claim(store, "n", 1, at(3)).await.remove(0);
    assert_eq!(claimed.task_id.as_str(), "01KIDRUN000000000000000000");
    // The running child submits a grandchild.
    let run2 = {
        let mut t = new_task("acme", "grand");
        t.parent = Some(TaskId::from("01KIDRUN000000000000000000"));
        insert(store, t, at(4)).await
    };
    let root_after = store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: root.clone(),
            now: at(5),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        root_after.state,
        TaskState::Succeeded,
        "a finished task stays as it is"
    );
    let running = get(store, &TaskId::from("01KIDRUN000000000000000000")).await;
    assert_eq!(running.state, TaskState::Running);
    assert!(running.cancel_requested);
    for id in [
        "01KIDWAIT00000000000000000",
        "01KIDQUEUED000000000000000",
        run2.as_str(),
    ] {
        let task = get(store, &TaskId::from(id)).await;
        assert_eq!(task.state, TaskState::Cancelled, "{id}");
        assert!(task.attempts.is_empty());
    }
    let queued = get(store, &TaskId::from("01KIDQUEUED000000000000000")).await;
    assert_eq!(
        queued.error.as_deref(),
        Some(format!("cancelled with its ancestor {root}").as_str())
    );
}

/// `task_list` filters by parent, module, labels (all must match) and state, together and
/// with keyset pagination.
pub async fn list_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let other = ModuleId::of(b"(module $other)");
    store
        .module_put(ModulePutParams {
            tenant: "acme".into(),
            id: other,
            name: Some("other".into()),
            bytes: b"(module $other)".to_vec(),
            kind: ModuleKind::Module,
            now: at(0),
        })
        .await
        .unwrap();
    let labelled = |input: &str, labels: &[(&str, &str)], module: Option<ModuleId>| {
        let mut t = new_task("acme", input);
        t.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(m) = module {
            t.module = m;
        }
        t
    };
    let a = insert(
        store,
        labelled("a", &[("team", "x"), ("env", "prod")], None),
        at(1),
    )
    .await;
    let b = insert(store, labelled("b", &[("team", "x")], Some(other)), at(2)).await;
    let c = insert(
        store,
        labelled("c", &[("team", "y"), ("env", "prod")], Some(other)),
        at(3),
    )
    .await;
    let mut d = after("acme", "d", &[&a]);
    d.labels = BTreeMap::from([("team".into(), "x".into())]);
    let d = insert(store, d, at(4)).await;
    insert(store, labelled("e", &[("team", "x")], None), at(5)).await;
    let mut theirs = new_task("globex", "theirs");
    theirs.labels = BTreeMap::from([("team".into(), "x".into())]);
    insert(store, theirs, at(6)).await;

    let page = |module: Option<ModuleId>, labels: &[(&str, &str)], state: Option<TaskState>| {
        TaskListParams {
            tenant: Some("acme".into()),
            state,
            module,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            parent: None,
            limit: 10,
            cursor: None,
        }
    };
    assert_eq!(
        list(store, page(Some(other), &[], None)).await,
        vec![c.clone(), b.clone()]
    );
    assert_eq!(
        list(store, page(None, &[("env", "prod")], None)).await,
        vec![c.clone(), a.clone()]
    );
    assert_eq!(
        list(store, page(None, &[("team", "x"), ("env", "prod")], None)).await,
        vec![a.clone()],
        "every label must match"
    );
    assert_eq!(
        list(store, page(Some(other), &[("team", "x")], None)).await,
        vec![b.clone()]
    );
    assert_eq!(
        list(
            store,
            page(None, &[("team", "x")], Some(TaskState::Waiting))
        )
        .await,
        vec![d.clone()]
    );
    assert_eq!(
        list(store, page(None, &[], Some(TaskState::Waiting))).await,
        vec![d.clone()]
    );
    let mut admin = page(None, &[], Some(TaskState::Waiting));
    admin.tenant = None;
    assert_eq!(list(store, admin).await, vec![d.clone()]);
    assert!(
        list(store, page(Some(ModuleId::of(b"none")), &[], None))
            .await
            .is_empty()
    );
    // Pages of one filtered listing.
    let mut first = page(None, &[("team", "x")], None);
    first.limit = 2;
    let got = store.task_list(first.clone()).await.unwrap();
    assert_eq!(got.tasks.len(), 2);
    let mut second = first;
    second.cursor = got.next_cursor;
    let rest = store.task_list(second).await.unwrap();
    let mut all: Vec<TaskId> = got
        .tasks
        .iter()
        .chain(&rest.tasks)
        .map(|t| t.id.clone())
        .collect();
    all.truncate(4);
    assert_eq!(all.len(), 4, "four acme tasks carry team=x");
    assert!(all.contains(&a) && all.contains(&b) && all.contains(&d));
    // By parent.
    let none = list(
        store,
        TaskListParams {
            tenant: Some("acme".into()),
            parent: Some(a.clone()),
            limit: 10,
            ..TaskListParams::default()
        },
    )
    .await;
    assert!(none.is_empty());
}
