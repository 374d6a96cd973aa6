//! What a submission needs before it is stored: its module reference resolved to an id
//! (cached, since modules never change), and room in its tenant's task quota.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fabric_store::{ModuleGetParams, ModuleRef, StatsParams};
use fabric_types::ModuleId;
use fabric_types::wire::code;
use serde_json::json;

use crate::rpc::RpcError;
use crate::server::App;

/// How long a resolved module *name* is trusted (a name can be moved to another module;
/// an id always means the same bytes).
const NAME_TTL: Duration = Duration::from_secs(1);
/// Entries kept before the cache starts over.
const MAX_CACHED: usize = 100_000;

/// A resolved id, and until when it may be trusted (`None`: forever).
type Resolved = (ModuleId, Option<Instant>);

/// Resolves `sha256:<hex>` ids and names to a tenant's module ids.
#[derive(Debug, Default)]
pub struct ModuleResolver {
    cache: Mutex<HashMap<(String, String), Resolved>>,
}

impl ModuleResolver {
    /// The id of `reference` among `tenant`'s modules; not found (naming `{at}module`)
    /// when the tenant has no such module.
    pub async fn resolve(
        &self,
        app: &App,
        tenant: &str,
        reference: &str,
        at: &str,
    ) -> Result<ModuleId, RpcError> {
        let key = (tenant.to_owned(), reference.to_owned());
        if let Some((id, expires)) = self.cache.lock().expect("resolver lock").get(&key)
            && expires.is_none_or(|at| Instant::now() < at)
        {
            return Ok(*id);
        }
        let module = match reference.parse::<ModuleId>() {
            Ok(id) => ModuleRef::Id(id),
            Err(_) if reference.starts_with("sha256:") => {
                return Err(RpcError::invalid_params(
                    format!("{at}module"),
                    "sha256: must be followed by 64 lowercase hex digits",
                ));
            }
            Err(_) => ModuleRef::Name(reference.to_owned()),
        };
        let expires = match module {
            ModuleRef::Id(_) => None,
            ModuleRef::Name(_) => Some(Instant::now() + NAME_TTL),
        };
        let record = app
            .store
            .module_get(ModuleGetParams {
                tenant: tenant.to_owned(),
                module,
            })
            .await
            .map_err(|err| RpcError::internal(format!("store: {err}")))?
            .ok_or_else(|| {
                RpcError::not_found(format!("module {reference:?}"))
                    .with_data(json!({ "field": format!("{at}module") }))
            })?;
        let mut cache = self.cache.lock().expect("resolver lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (record.id, expires));
        Ok(record.id)
    }
}

/// How long a tenant's count of unfinished tasks is trusted before it is read again: long
/// while the tenant is far from its limit (counting is not free), short near it.
const COUNT_TTL: Duration = Duration::from_secs(2);
const COUNT_TTL_NEAR_LIMIT: Duration = Duration::from_millis(100);

/// The per-tenant limit on unfinished tasks. Counts come from the store (so they include
/// other nodes' work) and are refreshed at most every [`COUNT_TTL`] (every
/// [`COUNT_TTL_NEAR_LIMIT`] above 90% of the limit); this node's own admissions are added
/// in between, so a flood cannot outrun the limit.
#[derive(Debug)]
pub struct TaskQuota {
    max: u64,
    counts: Mutex<HashMap<String, (Instant, u64)>>,
}

impl TaskQuota {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    /// Admits `adding` more tasks for `tenant`, or answers -32003.
    pub async fn admit(&self, app: &App, tenant: &str, adding: u64) -> Result<(), RpcError> {
        let fresh = self
            .counts
            .lock()
            .expect("quota lock")
            .get(tenant)
            .filter(|(at, count)| {
                let near = count.saturating_mul(10) >= self.max.saturating_mul(9);
                at.elapsed()
                    < if near {
                        COUNT_TTL_NEAR_LIMIT
                    } else {
                        COUNT_TTL
                    }
            })
            .map(|(_, count)| *count);
        let current = match fresh {
            Some(count) => count,
            None => {
                let stats = app
                    .store
                    .stats(StatsParams {
                        tenant: Some(tenant.to_owned()),
                    })
                    .await
                    .map_err(|err| RpcError::internal(format!("store: {err}")))?;
                let count = stats.queued() + stats.scheduled + stats.running;
                self.counts
                    .lock()
                    .expect("quota lock")
                    .insert(tenant.to_owned(), (Instant::now(), count));
                count
            }
        };
        if current + adding > self.max {
            return Err(RpcError::new(
                code::QUOTA,
                format!(
                    "task quota: this tenant has {current} unfinished tasks; {adding} more would pass its limit of {} (tenant_max_tasks)",
                    self.max
                ),
            )
            .with_data(json!({"limit": "tenant_max_tasks", "max": self.max, "current": current})));
        }
        if let Some((_, count)) = self.counts.lock().expect("quota lock").get_mut(tenant) {
            *count += adding;
        }
        Ok(())
    }

    /// Gives back admissions that did not add a task (deduplicated submissions).
    pub fn forget(&self, tenant: &str, count: u64) {
        if let Some((_, current)) = self.counts.lock().expect("quota lock").get_mut(tenant) {
            *current = current.saturating_sub(count);
        }
    }
}
