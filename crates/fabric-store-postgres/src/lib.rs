//! The PostgreSQL backend of the fabric store, for several fabric nodes sharing one
//! database: claims lock with `FOR UPDATE SKIP LOCKED` so no task is handed out twice,
//! attempts hold their tasks under leases renewed by heartbeats and fence completions by
//! attempt id, writers `NOTIFY` once per transaction and a listener turns that into the
//! ready signal, and a leader lease elects the node that runs maintenance.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fabric_store::StoreError> {
//! use fabric_store_postgres::{PostgresOptions, PostgresStore};
//! let store = PostgresStore::connect(
//!     "postgres://fabric@db.internal:5432/fabric",
//!     PostgresOptions::default(),
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Everything lives in one schema ([`PostgresOptions::schema`], `fabric` by default),
//! created and migrated at connect. Timestamps are stored as milliseconds since the Unix
//! epoch and always come from the callers' injected clocks.
//!
//! Running it:
//!
//! - **Privileges**: the first node to start needs `CREATE` on the database (to create the
//!   schema), or an operator creates the schema beforehand and grants it.
//! - **Connections**: each node opens up to [`PostgresOptions::pool_size`] connections
//!   plus one for `LISTEN`. Connections need session semantics (startup options, `LISTEN`):
//!   connect to PostgreSQL directly or through a pooler in session mode, not in
//!   transaction mode. Plain TCP only (no TLS).
//! - **Clocks**: leases and the leader lease compare instants from different nodes'
//!   clocks, so the nodes' clocks must agree to well within the lease lengths.
//! - **Durability**: a write is acknowledged after `COMMIT`, with the server's
//!   `synchronous_commit`.
//! - **Wake-ups**: after a write that made tasks claimable commits, the node sends
//!   `NOTIFY fabric_ready` with the schema as payload, from a background task that merges
//!   the requests of a burst of writes into one (never inside the writing transaction: a
//!   notifying transaction holds a database-wide lock through its commit, which would
//!   make concurrent writers commit one at a time). Each store's listener bumps
//!   [`Store::ready_signal`] for its own schema's notifications. A node that dies between
//!   a commit and its `NOTIFY` leaves that work for the next wake-up, so a scheduler should
//!   keep a slow poll as a backstop.
//! - **Maintenance**: rescue, promote, expire and prune are safe on every node at once
//!   (they lock with `SKIP LOCKED`); [`Store::leader_acquire`] elects one node to
//!   run them so the others do not waste work.

mod db;
mod error;
mod leader;
mod listen;
mod notify;
mod options;
mod reads;
mod reports;
mod rows;
mod schedules;
mod schema;
mod tls;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use fabric_store::{
    Capabilities, Claimed, Completed, Heartbeat, Inserted, LeaderAcquireParams,
    LeaderReleaseParams, ModuleDeleteParams, ModuleDeleted, ModuleGetParams, ModuleInfo,
    ModuleListParams, ModulePutParams, ModuleRecord, Rescued, Stats, StatsParams, Store,
    StoreError, TaskCancelParams, TaskClaimParams, TaskCompleteParams, TaskExpireParams,
    TaskGetParams, TaskHeartbeatParams, TaskId, TaskInsertParams, TaskListParams, TaskPage,
    TaskPromoteParams, TaskPruneParams, TaskRecord, TaskRescueParams,
};
use fabric_store::{
    KpiAggregate, KpiQueryParams, TaskProgressParams, UsageAggregate, UsageReportParams,
};
use fabric_store::{
    ScheduleAdvanceParams, ScheduleDeleteParams, ScheduleDueParams, ScheduleGetParams,
    ScheduleListParams, SchedulePut, SchedulePutParams, ScheduleRecord,
};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use leader::{Leader, MAINTENANCE_LEASE};
pub use options::PostgresOptions;
pub use reads::MAX_LIST_LIMIT;
pub use schema::SCHEMA_VERSION;

use db::Db;
use error::pool_err;
use notify::Notifier;

/// How long TCP waits on a silent connection before probing it, so a dead server is
/// noticed even by idle connections.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// A store in one schema of a PostgreSQL database, shareable by many processes. Cheap to
/// share behind an `Arc`; dropping it stops the listener and closes the pool.
pub struct PostgresStore {
    db: Db,
    listen: bool,
    listener: Option<JoinHandle<()>>,
    ready: watch::Receiver<u64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.db.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.db.schema)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host:port/db`, or
    /// the `key=value` form), creates or migrates [`PostgresOptions::schema`], and starts
    /// the listener (with [`PostgresOptions::listen`]). Must run inside a Tokio runtime.
    ///
    /// Errors: `InvalidArgument` for bad options or URL, `Unavailable` when the server
    /// cannot be reached, `SchemaTooNew` when a newer build migrated the schema.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        options.validate()?;
        let tls = tls::split(url)?;
        let connector = tls.connector()?;
        let mut config: tokio_postgres::Config = tls
            .rest
            .parse()
            .map_err(|e| StoreError::InvalidArgument(format!("database URL: {e}")))?;
        // Every connection starts in the store's schema, under its statement timeout, and
        // plans each execution with its real parameters: a cached generic plan made while
        // a table was small (or before statistics caught up with a queue's churn) joins a
        // batch to the table by scanning the whole table, on every call.
        let startup = format!(
            "{} -c search_path={} -c statement_timeout={} -c plan_cache_mode=force_custom_plan",
            config.get_options().unwrap_or_default(),
            options.schema,
            options.statement_timeout.as_millis()
        );
        config
            .options(startup.trim())
            .application_name(&options.application_name)
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .ssl_mode(tls.ssl_mode());

        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                // A closed connection is dropped when it comes back; a connection the
                // server killed fails its next statement with `Unavailable`.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::InvalidArgument(format!("connection pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(pool_err("connect"))?;
            schema::migrate(&mut client, &options.schema).await?;
        }

        let (ready_tx, ready) = watch::channel(0);
        let ready_tx = Arc::new(ready_tx);
        let listener = if options.listen {
            Some(
                listen::start(
                    config,
                    connector,
                    options.schema.clone(),
                    Arc::clone(&ready_tx),
                    options.connect_timeout,
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Self {
            db: Db {
                notifier: Notifier::start(pool.clone(), options.schema.clone()),
                pool,
                aging_step_ms: options.aging_step_ms(),
                schema: options.schema,
                ready: ready_tx,
            },
            listen: options.listen,
            listener,
            ready,
        })
    }

    /// The schema this store works in.
    pub fn schema(&self) -> &str {
        &self.db.schema
    }

    /// Waits until other nodes have been notified of every task this store made
    /// claimable so far (notifications go out in the background, after their writes
    /// commit). Call it before shutting down; wrap it in a timeout, since it waits for the
    /// database while the database is unreachable.
    pub async fn notify_flush(&self) {
        self.db.notifier.flush().await;
    }

    /// Closes the pool: idle connections close now, busy ones when they come back, and
    /// later operations fail with `StoreError::Closed`. The listener stops, and pending
    /// notifications are dropped (call [`PostgresStore::notify_flush`] first).
    pub fn close(&self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        self.db.notifier.abort();
        self.db.pool.close();
    }
}

impl Drop for PostgresStore {
    /// Stops the listener; the notifier sends what is pending, then stops by itself.
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            listen_notify: self.listen,
            multi_node: true,
        }
    }

    fn aging_step_ms(&self) -> u64 {
        self.db.aging_step_ms
    }

    fn ready_signal(&self) -> watch::Receiver<u64> {
        self.ready.clone()
    }

    async fn module_put(&self, params: ModulePutParams) -> Result<ModuleInfo, StoreError> {
        writes::module_put(&self.db, params).await
    }

    async fn module_get(
        &self,
        params: ModuleGetParams,
    ) -> Result<Option<ModuleRecord>, StoreError> {
        reads::module_get(&self.db, params).await
    }

    async fn module_list(&self, params: ModuleListParams) -> Result<Vec<ModuleInfo>, StoreError> {
        reads::module_list(&self.db, params).await
    }

    async fn module_delete(&self, params: ModuleDeleteParams) -> Result<ModuleDeleted, StoreError> {
        writes::module_delete(&self.db, params).await
    }

    async fn task_insert(&self, params: TaskInsertParams) -> Result<Vec<Inserted>, StoreError> {
        if params.tasks.is_empty() {
            return Ok(Vec::new());
        }
        writes::task_insert(&self.db, params).await
    }

    async fn task_get(&self, params: TaskGetParams) -> Result<Option<TaskRecord>, StoreError> {
        let client = self.db.client("task_get").await?;
        reads::load_task(&client, params.tenant.as_deref(), params.id.as_str()).await
    }

    async fn task_list(&self, params: TaskListParams) -> Result<TaskPage, StoreError> {
        reads::task_list(&self.db, params).await
    }

    async fn task_claim(&self, params: TaskClaimParams) -> Result<Claimed, StoreError> {
        if params.max == 0 {
            return Ok(Claimed::default());
        }
        writes::task_claim(&self.db, params).await
    }

    async fn task_heartbeat(&self, params: TaskHeartbeatParams) -> Result<Heartbeat, StoreError> {
        writes::task_heartbeat(&self.db, params).await
    }

    async fn task_complete(
        &self,
        params: TaskCompleteParams,
    ) -> Result<Vec<Completed>, StoreError> {
        writes::task_complete(&self.db, params).await
    }

    async fn task_cancel(
        &self,
        params: TaskCancelParams,
    ) -> Result<Option<TaskRecord>, StoreError> {
        writes::task_cancel(&self.db, params).await
    }

    async fn task_rescue(&self, params: TaskRescueParams) -> Result<Vec<Rescued>, StoreError> {
        writes::task_rescue(&self.db, params).await
    }

    async fn task_promote(&self, params: TaskPromoteParams) -> Result<Vec<TaskId>, StoreError> {
        writes::task_promote(&self.db, params).await
    }

    async fn task_expire(&self, params: TaskExpireParams) -> Result<Vec<TaskId>, StoreError> {
        writes::task_expire(&self.db, params).await
    }

    async fn task_prune(&self, params: TaskPruneParams) -> Result<u64, StoreError> {
        writes::task_prune(&self.db, params).await
    }

    async fn leader_acquire(&self, params: LeaderAcquireParams) -> Result<bool, StoreError> {
        leader::acquire(&self.db, params).await
    }

    async fn leader_release(&self, params: LeaderReleaseParams) -> Result<bool, StoreError> {
        leader::release(&self.db, params).await
    }

    async fn task_progress(&self, params: TaskProgressParams) -> Result<u64, StoreError> {
        writes::task_progress(&self.db, params).await
    }

    async fn kpi_query(&self, params: KpiQueryParams) -> Result<Vec<KpiAggregate>, StoreError> {
        reports::kpi_query(&self.db, params).await
    }

    async fn usage_report(
        &self,
        params: UsageReportParams,
    ) -> Result<Vec<UsageAggregate>, StoreError> {
        reports::usage_report(&self.db, params).await
    }

    async fn stats(&self, params: StatsParams) -> Result<Stats, StoreError> {
        reads::stats(&self.db, params).await
    }

    async fn next_wakeup(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        reads::next_wakeup(&self.db).await
    }

    async fn schedule_put(&self, params: SchedulePutParams) -> Result<SchedulePut, StoreError> {
        schedules::put(&self.db, params).await
    }

    async fn schedule_get(
        &self,
        params: ScheduleGetParams,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        schedules::get(&self.db, params).await
    }

    async fn schedule_list(
        &self,
        params: ScheduleListParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        schedules::list(&self.db, params).await
    }

    async fn schedule_delete(&self, params: ScheduleDeleteParams) -> Result<bool, StoreError> {
        schedules::delete(&self.db, params).await
    }

    async fn schedule_due(
        &self,
        params: ScheduleDueParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        if params.max == 0 {
            return Ok(Vec::new());
        }
        schedules::due(&self.db, params).await
    }

    async fn schedule_advance(&self, params: ScheduleAdvanceParams) -> Result<bool, StoreError> {
        schedules::advance(&self.db, params).await
    }

    async fn schedule_next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        schedules::next_due(&self.db).await
    }
}
