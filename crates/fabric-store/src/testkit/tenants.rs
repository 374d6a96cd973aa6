//! Tenant isolation of tasks and modules, and the module registry (put, get, list).

use std::sync::Arc;

use fabric_types::{ModuleId, TaskState};

use super::{at, get, insert, module_id, new_task};
use crate::{
    ModuleGetParams, ModuleKind, ModuleListParams, ModulePutParams, ModuleRef, StatsParams, Store,
    TaskCancelParams, TaskGetParams, TaskListParams,
};

/// Another tenant's tasks and modules are not found, listed, counted or cancelled.
pub async fn tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let mine = insert(store, new_task("acme", "mine"), at(0)).await;
    let theirs = insert(store, new_task("globex", "theirs"), at(1)).await;

    let got = store
        .task_get(TaskGetParams {
            tenant: Some("acme".into()),
            id: theirs.clone(),
        })
        .await
        .unwrap();
    assert!(got.is_none(), "acme read globex's task");
    assert!(
        store
            .task_get(TaskGetParams {
                tenant: Some("acme".into()),
                id: mine.clone()
            })
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .task_get(TaskGetParams {
                tenant: None,
                id: theirs.clone()
            })
            .await
            .unwrap()
            .is_some()
    );

    let page = store
        .task_list(TaskListParams {
            tenant: Some("acme".into()),
            state: None,
            limit: 100,
            cursor: None,
            ..TaskListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![mine.clone()]
    );
    let all = store
        .task_list(TaskListParams {
            tenant: None,
            state: None,
            limit: 100,
            cursor: None,
            ..TaskListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(all.tasks.len(), 2);

    let cancelled = store
        .task_cancel(TaskCancelParams {
            tenant: Some("acme".into()),
            id: theirs.clone(),
            now: at(2),
        })
        .await
        .unwrap();
    assert!(cancelled.is_none(), "acme cancelled globex's task");
    assert_eq!(get(store, &theirs).await.state, TaskState::Queued);

    let stats = store
        .stats(StatsParams {
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(stats.queued(), 1);
    let stats = store.stats(StatsParams { tenant: None }).await.unwrap();
    assert_eq!(stats.queued(), 2);

    let bytes = b"\0asm\x01\0\0\0".to_vec();
    let id = ModuleId::of(&bytes);
    store
        .module_put(ModulePutParams {
            tenant: "acme".into(),
            id,
            name: Some("echo".into()),
            bytes,
            kind: ModuleKind::Module,
            now: at(3),
        })
        .await
        .unwrap();
    let by_id = ModuleGetParams {
        tenant: "globex".into(),
        module: ModuleRef::Id(id),
    };
    assert!(
        store.module_get(by_id).await.unwrap().is_none(),
        "globex read acme's module"
    );
    let by_name = ModuleGetParams {
        tenant: "globex".into(),
        module: ModuleRef::Name("echo".into()),
    };
    assert!(
        store.module_get(by_name).await.unwrap().is_none(),
        "globex read acme's module name"
    );
    let listed = |tenant: &str| {
        let params = ModuleListParams {
            tenant: tenant.into(),
        };
        async move {
            let list = store.module_list(params).await.unwrap();
            list.into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed("globex").await,
        vec![module_id()],
        "globex listed acme's module"
    );
    assert_eq!(listed("acme").await, vec![module_id(), id]);
}

/// Modules: put is idempotent, get by id and by name, a name follows the newest put.
pub async fn modules_put_get_list(store: Arc<dyn Store>) {
    let store = &*store;
    let v1 = b"\0asm\x01\0\0\0version-1".to_vec();
    let v2 = b"\0asm\x0d\0\x01\0version-2".to_vec();
    let (id1, id2) = (ModuleId::of(&v1), ModuleId::of(&v2));
    let put = |id, name: Option<&str>, bytes: &Vec<u8>, kind, now| ModulePutParams {
        tenant: "acme".into(),
        id,
        name: name.map(str::to_string),
        bytes: bytes.clone(),
        kind,
        now,
    };

    let info = store
        .module_put(put(id1, Some("echo"), &v1, ModuleKind::Module, at(0)))
        .await
        .unwrap();
    assert_eq!(info.id, id1);
    assert_eq!(info.size, v1.len() as u64);
    assert_eq!(info.created_at, at(0));
    // Idempotent: the same bytes again keep the first created_at.
    let again = store
        .module_put(put(id1, None, &v1, ModuleKind::Module, at(50)))
        .await
        .unwrap();
    assert_eq!(again.created_at, at(0));

    let got = store
        .module_get(ModuleGetParams {
            tenant: "acme".into(),
            module: ModuleRef::Id(id1),
        })
        .await
        .unwrap()
        .expect("module by id");
    assert_eq!(got.bytes, v1);
    assert_eq!(got.kind, ModuleKind::Module);
    assert_eq!(got.name.as_deref(), Some("echo"));

    store
        .module_put(put(id2, Some("echo"), &v2, ModuleKind::Component, at(100)))
        .await
        .unwrap();
    let by_name = store
        .module_get(ModuleGetParams {
            tenant: "acme".into(),
            module: ModuleRef::Name("echo".into()),
        })
        .await
        .unwrap()
        .expect("module by name");
    assert_eq!(
        by_name.id, id2,
        "a name points at the newest module put under it"
    );
    assert_eq!(by_name.kind, ModuleKind::Component);
    assert_eq!(by_name.bytes, v2);

    let missing = ModuleGetParams {
        tenant: "acme".into(),
        module: ModuleRef::Name("nope".into()),
    };
    assert!(store.module_get(missing).await.unwrap().is_none());

    let list = store
        .module_list(ModuleListParams {
            tenant: "acme".into(),
        })
        .await
        .unwrap();
    // The seeded module (put at T0 - 1 ms) comes first.
    assert_eq!(
        list.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![module_id(), id1, id2]
    );
}
