//! Deleting a module: refused while unfinished tasks of its tenant use it, and then a task
//! naming it cannot be inserted; finished tasks stay readable.

use std::sync::Arc;

use fabric_types::{ModuleId, Outcome, TaskState};

use super::{at, claim, complete, get, insert};
use crate::{
    ModuleDeleteParams, ModuleDeleted, ModuleGetParams, ModuleKind, ModuleListParams,
    ModulePutParams, ModuleRef, NewTask, Next, StatsParams, Store, StoreError, TaskCancelParams,
    TaskInsertParams,
};

/// `module_delete` refuses (naming how many) while scheduled, queued or running tasks of the
/// tenant use the module, deletes it with its name once they finished, frees its bytes in
/// the listing, leaves finished tasks readable, and a later insert naming it fails whole.
pub async fn module_delete_rules(store: Arc<dyn Store>) {
    let store = &*store;
    let bytes = b"\0asm\x01\0\0\0deletable".to_vec();
    let m = ModuleId::of(&bytes);
    let put = |tenant: &str, now| ModulePutParams {
        tenant: tenant.into(),
        id: m,
        name: Some("deletable".into()),
        bytes: bytes.clone(),
        kind: ModuleKind::Module,
        now,
    };
    let delete = |tenant: &str, module: ModuleRef| {
        store.module_delete(ModuleDeleteParams {
            tenant: tenant.into(),
            module,
        })
    };
    let stored_bytes = |tenant: &str| {
        let params = ModuleListParams {
            tenant: tenant.into(),
        };
        async move {
            let list = store.module_list(params).await.unwrap();
            list.iter().map(|m| m.size).sum::<u64>()
        }
    };
    store.module_put(put("acme", at(0))).await.unwrap();
    store.module_put(put("globex", at(0))).await.unwrap();
    let before = stored_bytes("acme").await;

    let ran = insert(store, NewTask::new("acme", m, b"ran".to_vec()), at(1)).await;
    let mut later = NewTask::new("acme", m, b"later".to_vec());
    later.run_at = Some(at(60_000));
    let later = insert(store, later, at(2)).await;
    assert_eq!(get(store, &later).await.state, TaskState::Scheduled);
    // Another tenant's unfinished task on the same bytes does not count for acme.
    insert(store, NewTask::new("globex", m, b"theirs".to_vec()), at(3)).await;

    let by_name = ModuleRef::Name("deletable".into());
    assert_eq!(
        delete("acme", by_name.clone()).await.unwrap(),
        ModuleDeleted::InUse {
            id: m,
            unfinished: 2
        },
        "a queued and a scheduled task use it"
    );
    let running = claim(store, "node", 10, at(4)).await;
    let mine = running
        .iter()
        .find(|c| c.task_id == ran)
        .expect("acme's task claimed");
    assert_eq!(
        delete("acme", ModuleRef::Id(m)).await.unwrap(),
        ModuleDeleted::InUse {
            id: m,
            unfinished: 2
        },
        "a running and a scheduled task use it"
    );
    complete(
        store,
        &mine.attempt_id,
        Outcome::Ok,
        Next::Finish(TaskState::Succeeded),
        at(5),
    )
    .await;
    store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: later.clone(),
            now: at(6),
        })
        .await
        .unwrap()
        .expect("cancel the scheduled task");

    assert_eq!(
        delete("globex", ModuleRef::Name("nope".into()))
            .await
            .unwrap(),
        ModuleDeleted::NotFound
    );
    let deleted = delete("acme", by_name.clone()).await.unwrap();
    let ModuleDeleted::Deleted(info) = deleted else {
        panic!("expected the module deleted, got {deleted:?}");
    };
    assert_eq!((info.id, info.size), (m, bytes.len() as u64));
    assert_eq!(
        delete("acme", ModuleRef::Id(m)).await.unwrap(),
        ModuleDeleted::NotFound,
        "deleted twice"
    );
    for module in [ModuleRef::Id(m), by_name] {
        let got = store
            .module_get(ModuleGetParams {
                tenant: "acme".into(),
                module,
            })
            .await
            .unwrap();
        assert!(got.is_none(), "the module or its name outlived the delete");
    }
    assert_eq!(
        stored_bytes("acme").await,
        before - bytes.len() as u64,
        "the module's bytes still count for its tenant"
    );
    let theirs = store
        .module_get(ModuleGetParams {
            tenant: "globex".into(),
            module: ModuleRef::Id(m),
        })
        .await
        .unwrap();
    assert!(theirs.is_some(), "acme's delete took globex's module");

    let finished = get(store, &ran).await;
    assert_eq!(
        (finished.state, finished.module, finished.attempts.len()),
        (TaskState::Succeeded, m, 1),
        "a finished task stays readable with the id of the module it ran"
    );

    let queued_before = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap()
        .queued();
    let refused = store
        .task_insert(TaskInsertParams {
            tasks: vec![
                NewTask::new("acme", super::module_id(), b"fine".to_vec()),
                NewTask::new("acme", m, b"too late".to_vec()),
            ],
            now: at(7),
        })
        .await;
    match refused {
        Err(StoreError::ModuleNotFound {
            index,
            tenant,
            module,
        }) => assert_eq!((index, tenant.as_str(), module), (1, "acme", m.to_string())),
        other => panic!("an insert naming a deleted module: {other:?}"),
    }
    let queued_after = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap()
        .queued();
    assert_eq!(
        queued_after, queued_before,
        "part of a refused batch was stored"
    );

    // Put again, it is back and usable.
    store.module_put(put("acme", at(8))).await.unwrap();
    insert(store, NewTask::new("acme", m, b"again".to_vec()), at(9)).await;
}
