//! What a submission needs before it is stored: its module reference resolved to an id
//! (cached, since a module's bytes never change; a deleted module is forgotten), and room
//! in its tenant's task quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fabric_store::{ModuleGetParams, ModuleRef, StatsParams, Store};
use fabric_types::ModuleId;
use fabric_types::wire::{FieldError, LimitExceeded, code};

use crate::rpc::RpcError;

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
        store: &dyn Store,
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
        let module = module_ref(reference, at)?;
        let expires = match module {
            ModuleRef::Id(_) => None,
            ModuleRef::Name(_) => Some(Instant::now() + NAME_TTL),
        };
        let record = store
            .module_get(ModuleGetParams {
                tenant: tenant.to_owned(),
                module,
            })
            .await
            .map_err(RpcError::store)?
            .ok_or_else(|| {
                RpcError::not_found(format!("module {reference:?}")).with_data(FieldError {
                    field: format!("{at}module"),
                })
            })?;
        let mut cache = self.cache.lock().expect("resolver lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (record.id, expires));
        Ok(record.id)
    }
}

impl ModuleResolver {
    /// Forgets every reference of `tenant` that resolved to `id` (a deleted module).
    pub fn forget(&self, tenant: &str, id: &ModuleId) {
        self.cache
            .lock()
            .expect("resolver lock")
            .retain(|(t, _), (resolved, _)| !(t == tenant && resolved == id));
    }
}

/// A module reference of the API (`sha256:<hex>` or a name) for the store; a malformed id
/// is invalid params naming `{at}module`.
pub fn module_ref(reference: &str, at: &str) -> Result<ModuleRef, RpcError> {
    match reference.parse::<ModuleId>() {
        Ok(id) => Ok(ModuleRef::Id(id)),
        Err(_) if reference.starts_with("sha256:") => Err(RpcError::invalid_params(
            format!("{at}module"),
            "sha256: must be followed by 64 lowercase hex digits",
        )),
        Err(_) => Ok(ModuleRef::Name(reference.to_owned())),
    }
}

/// How long a tenant's count of unfinished tasks is trusted before it is read again: long
/// while the tenant is far from its limit (counting is not free), short near it.
const COUNT_TTL: Duration = Duration::from_secs(2);
const COUNT_TTL_NEAR_LIMIT: Duration = Duration::from_millis(100);

/// The per-tenant limit on unfinished tasks. Counts come from the store (so they include
/// other nodes' work) and are refreshed at most every [`COUNT_TTL`] (every
/// [`COUNT_TTL_NEAR_LIMIT`] above 90% of the limit); this node's own admissions are added
/// in between, so a flood cannot outrun the limit. The check and the admission are one step
/// under the lock, and admissions not yet committed are kept apart from the stored count, so
/// concurrent requests cannot pass the limit together and a refresh cannot forget them.
#[derive(Debug)]
pub struct TaskQuota {
    max: u64,
    counts: Mutex<HashMap<String, Count>>,
}

/// One tenant's count of unfinished tasks.
#[derive(Debug)]
struct Count {
    read_at: Instant,
    /// As the store last counted them, plus this node's admissions committed since.
    stored: u64,
    /// Admitted by this node and not yet committed (or given back).
    pending: u64,
    /// Every admission ever committed here: what a refresh adds for those that committed
    /// while it read the store (perhaps counting them twice, never missing one).
    settled: u64,
}

impl Count {
    fn fresh(&self, max: u64) -> bool {
        let near = (self.stored + self.pending).saturating_mul(10) >= max.saturating_mul(9);
        self.read_at.elapsed()
            < if near {
                COUNT_TTL_NEAR_LIMIT
            } else {
                COUNT_TTL
            }
    }
}

/// Room taken in a tenant's quota. [`Admitted::settle`] says how many tasks the store
/// really added; dropped unsettled (the insert failed), the room is given back.
#[derive(Debug)]
pub struct Admitted<'q> {
    quota: &'q TaskQuota,
    tenant: String,
    adding: u64,
}

impl Admitted<'_> {
    /// `added` of the admitted tasks were stored (the rest were deduplicated).
    pub fn settle(self, added: u64) {
        if let Some(count) = self
            .quota
            .counts
            .lock()
            .expect("quota lock")
            .get_mut(&self.tenant)
        {
            let added = added.min(self.adding);
            count.stored += added;
            count.settled += added;
        }
        // Dropping gives back the pending room.
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(count) = self
            .quota
            .counts
            .lock()
            .expect("quota lock")
            .get_mut(&self.tenant)
        {
            count.pending = count.pending.saturating_sub(self.adding);
        }
    }
}

impl TaskQuota {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    /// Admits `adding` more tasks for `tenant`, or answers -32003.
    pub async fn admit<'q>(
        &'q self,
        store: &dyn Store,
        tenant: &str,
        adding: u64,
    ) -> Result<Admitted<'q>, RpcError> {
        let settled_before = {
            let mut counts = self.counts.lock().expect("quota lock");
            match counts.get_mut(tenant) {
                Some(count) if count.fresh(self.max) => {
                    return self.take(count, tenant, adding);
                }
                Some(count) => Some(count.settled),
                None => None,
            }
        };
        let stats = store
            .stats(StatsParams {
                tenant: Some(tenant.to_owned()),
            })
            .await
            .map_err(RpcError::store)?;
        let unfinished = stats.waiting + stats.queued() + stats.scheduled + stats.running;
        let mut counts = self.counts.lock().expect("quota lock");
        let count = counts.entry(tenant.to_owned()).or_insert(Count {
            read_at: Instant::now(),
            stored: 0,
            pending: 0,
            settled: 0,
        });
        // A count created while this one read the store started at 0 settled.
        let settled_during_read = count.settled - settled_before.unwrap_or(0);
        count.read_at = Instant::now();
        count.stored = unfinished + settled_during_read;
        self.take(count, tenant, adding)
    }

    /// Takes room for `adding` tasks in `count`, or answers -32003 naming the limit.
    fn take<'q>(
        &'q self,
        count: &mut Count,
        tenant: &str,
        adding: u64,
    ) -> Result<Admitted<'q>, RpcError> {
        let current = count.stored + count.pending;
        if current + adding > self.max {
            return Err(RpcError::new(
                code::QUOTA,
                format!(
                    "task quota: this tenant has {current} unfinished tasks; {adding} more would pass its limit of {} (tenant_max_tasks)",
                    self.max
                ),
            )
            .with_data(LimitExceeded {
                limit: "tenant_max_tasks".into(),
                max: self.max,
                current: Some(current),
            }));
        }
        count.pending += adding;
        Ok(Admitted {
            quota: self,
            tenant: tenant.to_owned(),
            adding,
        })
    }
}

/// One async lock per tenant: a tenant's module uploads run one at a time, so two cannot
/// each find room under the module quota and pass it together (and one tenant compiles one
/// module at a time).
#[derive(Debug, Default)]
pub struct TenantLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl TenantLocks {
    pub async fn lock(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .expect("tenant locks")
            .entry(tenant.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}
