//! Module names for reports: which name (if any) points at a module of a tenant, read from
//! the store at most once per tenant per [`NAME_TTL`], so that labelling every finished
//! attempt's metrics and `kpi.report` costs no store call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fabric_store::{ModuleListParams, Store};
use fabric_types::ModuleId;

/// How long a tenant's names are reused before they are read again.
const NAME_TTL: Duration = Duration::from_secs(10);
/// Tenants kept; past this the cache starts over.
const MAX_TENANTS: usize = 10_000;

type Names = Arc<HashMap<ModuleId, String>>;

/// Each tenant's module names, by module id.
#[derive(Debug, Default)]
pub struct ModuleNames {
    tenants: Mutex<HashMap<String, (Instant, Names)>>,
}

impl ModuleNames {
    /// The name pointing at `tenant`'s `module`, if any. A store error answers `None` (a
    /// report then shows the id only) and is retried on the next call.
    pub async fn name(&self, store: &dyn Store, tenant: &str, module: &ModuleId) -> Option<String> {
        let cached = self
            .tenants
            .lock()
            .expect("module names lock")
            .get(tenant)
            .filter(|(read, _)| read.elapsed() < NAME_TTL)
            .map(|(_, names)| names.clone());
        let names = match cached {
            Some(names) => names,
            None => self.read(store, tenant).await?,
        };
        names.get(module).cloned()
    }

    async fn read(&self, store: &dyn Store, tenant: &str) -> Option<Names> {
        let modules = store
            .module_list(ModuleListParams {
                tenant: tenant.to_owned(),
            })
            .await
            .inspect_err(|e| tracing::warn!(error = %e, tenant, "reading module names failed"))
            .ok()?;
        let names: Names = Arc::new(
            modules
                .into_iter()
                .filter_map(|m| Some((m.id, m.name?)))
                .collect(),
        );
        let mut tenants = self.tenants.lock().expect("module names lock");
        if tenants.len() >= MAX_TENANTS {
            tenants.clear();
        }
        tenants.insert(tenant.to_owned(), (Instant::now(), names.clone()));
        Some(names)
    }
}
