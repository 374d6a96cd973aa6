//! One running server: opens the store, the sandbox and the scheduler from a
//! [`ServerConfig`], serves the API until told to stop, then drains: readiness off, new
//! work refused, running attempts given their grace, the store closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fabric_sandbox::{Sandbox, SandboxConfig};
use fabric_scheduler::{Scheduler, SchedulerConfig, SystemClock};
use fabric_store::Store;
use fabric_store_postgres::{PostgresOptions, PostgresStore};
use fabric_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::admission::{ModuleResolver, TaskQuota, TenantLocks};
use crate::auth::{Auth, AuthFileError};
use crate::config::{ServerConfig, StoreUrl, SyncMode};
use crate::metrics::Metrics;
use crate::timed_store::TimedStore;
use crate::waiters::Waiters;

/// Where the server is in its life; `/readyz` answers 200 only when `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Draining,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub config: ServerConfig,
    pub store: Arc<dyn Store>,
    pub scheduler: Scheduler,
    pub sandbox: Arc<Sandbox>,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    pub modules: Arc<ModuleResolver>,
    pub quota: Arc<TaskQuota>,
    /// Set while the store's disk is full (see `TimedStore`): `/readyz` answers 503.
    pub store_full: Arc<AtomicBool>,
    /// Serializes each tenant's `module.put` (the module quota's check and write).
    pub module_puts: TenantLocks,
    /// Calls waiting for a task's end (`task.wait`), woken by the event router.
    pub(crate) waiters: Arc<Waiters>,
    /// Module names for KPI metrics and reports.
    pub(crate) module_names: crate::module_names::ModuleNames,
    /// The trace export, when tracing is on.
    pub otel: Option<Arc<crate::otel::Otel>>,
    phase: watch::Sender<Phase>,
}

impl App {
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        *self.phase.borrow() == Phase::Draining
    }

    pub fn is_ready(&self) -> bool {
        *self.phase.borrow() == Phase::Ready
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthFileError),
    #[error(
        "the auth file lets tenant {tenant:?} name egress policy {policy:?}, which is not \
         defined (add an [[egress]] table or --egress {policy}=URL)"
    )]
    UnknownEgress { tenant: String, policy: String },
    #[error("cannot open the store: {0}")]
    Store(#[from] fabric_store::StoreError),
    #[error("cannot set up the sandbox: {0}")]
    Sandbox(#[from] fabric_sandbox::SandboxError),
    #[error(
        "--workers {workers} is more than this machine can run at once: the pooling allocator's \
         address space holds at most {pooled} workers with --max-task-memory {max_task_memory} \
         bytes, and allocating on demand takes about {ON_DEMAND_MAPPINGS_PER_ATTEMPT} memory \
         mappings per running attempt against vm.max_map_count {max_map_count} (at most \
         {limit} workers); lower --workers or --max-task-memory, or raise vm.max_map_count"
    )]
    TooManyWorkers {
        workers: u32,
        pooled: u64,
        max_task_memory: u64,
        max_map_count: u64,
        limit: u64,
    },
    #[error(
        "--workers {workers} is more than this machine can run at once: pooled, each worker \
         takes about {POOLED_MAPPINGS_PER_WORKER} memory mappings against vm.max_map_count \
         {max_map_count} (at most {limit} workers); lower --workers or raise vm.max_map_count"
    )]
    TooManyPooledWorkers {
        workers: u32,
        max_map_count: u64,
        limit: u64,
    },
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[from] fabric_scheduler::SchedulerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    /// A second SIGTERM or SIGINT came while draining: stop now.
    #[error("second signal: exiting now")]
    Interrupted,
}

/// A server that has opened everything and bound its address, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    /// With `--tls-cert`: the handshakes' configuration.
    tls: Option<crate::tls::Acceptor>,
}

impl Server {
    /// Opens the store, builds the sandbox, starts the scheduler (which rescues tasks left
    /// running by a previous process) and binds the listen address.
    pub async fn start(config: ServerConfig) -> Result<Self, ServeError> {
        let auth = match &config.auth {
            Some(path) => Auth::load(path)?,
            None => Auth::Off,
        };
        // Read before anything is opened, so a bad file fails the start at once.
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
            None => None,
        };
        if let Some((tenant, policy)) = auth
            .egress_names()
            .into_iter()
            .find(|(_, policy)| !config.egress.contains_key(policy))
        {
            return Err(ServeError::UnknownEgress { tenant, policy });
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Sqlite(path) => {
                let options = SqliteOptions {
                    synchronous: match config.synchronous {
                        SyncMode::Normal => Synchronous::Normal,
                        SyncMode::Full => Synchronous::Full,
                    },
                    ..SqliteOptions::default()
                };
                Arc::new(SqliteStore::open(path, options)?)
            }
            StoreUrl::Postgres { url, schema, pool } => {
                let options = PostgresOptions {
                    schema: schema.clone(),
                    pool_size: *pool,
                    application_name: format!("fabric-{}", config.node)
                        .chars()
                        .map(|c| {
                            if c.is_ascii_graphic() && c != '\\' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect(),
                    ..PostgresOptions::default()
                };
                tracing::info!(url = %redact(url), schema, "connecting to PostgreSQL");
                Arc::new(PostgresStore::connect(url, options).await?)
            }
        };
        let store_full = Arc::new(AtomicBool::new(false));
        let store: Arc<dyn Store> =
            Arc::new(TimedStore::new(store, metrics.clone(), store_full.clone()));
        let sandbox = Arc::new(Sandbox::new(SandboxConfig {
            slots: config.workers,
            max_memory_bytes: config.max_task_memory,
            max_module_bytes: config.max_module_bytes,
            cache_dir: Some(config.data_dir.join("compiled")),
            max_kpi_names: config.max_kpi_names as usize,
            max_telemetry_calls: config.max_telemetry_calls,
            ..SandboxConfig::default()
        })?);
        check_mappings(sandbox.config(), sandbox.is_pooling())?;
        let spawns = metrics.clone();
        sandbox.observe_spawns(Box::new(move |took| spawns.spawned(took)));
        let egress = metrics.clone();
        sandbox.observe_egress(Arc::new(move |event| egress.egress(event)));
        if !sandbox.is_pooling() {
            tracing::warn!(
                workers = config.workers,
                "the address space cannot hold a pool for every worker: instances are allocated on demand (slower)"
            );
        }
        for (name, dir) in &config.volumes {
            tracing::info!(volume = name, dir = %dir.display(), "volume tasks may be granted read-only");
        }
        for policy in config.egress.values() {
            tracing::info!(policy = ?policy, "egress policy tasks may name");
        }
        let otel = config
            .otel
            .clone()
            .map(|otel| crate::otel::Otel::start(otel, &config.node));
        let modules = Arc::new(ModuleResolver::default());
        let quota = Arc::new(TaskQuota::new(config.tenant_max_tasks));
        let children = Arc::new(crate::children::ChildIntake {
            store: store.clone(),
            modules: modules.clone(),
            quota: quota.clone(),
            max_input_bytes: config.max_input_bytes,
            max_task_memory: config.max_task_memory,
            volumes: config.volumes.clone(),
            egress: config.egress.clone(),
        });
        let scheduler = Scheduler::start(
            SchedulerConfig {
                children: Some(children),
                spans: otel
                    .clone()
                    .map(|otel| otel as Arc<dyn fabric_types::trace::SpanSink>),
                workers: config.workers,
                tenant_max_running: Some(config.tenant_max_running),
                lease: config.lease,
                heartbeat_every: config.lease / 3,
                retention: config.retention,
                // A short retention is pruned often enough to hold the store near its size.
                prune_every: (config.retention / 4)
                    .clamp(Duration::from_secs(1), SchedulerConfig::DEFAULT_PRUNE_EVERY),
                volumes: config.volumes.clone(),
                egress: config.egress.clone(),
                ..SchedulerConfig::new(config.node.clone())
            },
            store.clone(),
            sandbox.clone(),
            Arc::new(SystemClock),
        )?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let (phase, _) = watch::channel(Phase::Starting);
        let app = Arc::new(App {
            quota,
            module_puts: TenantLocks::default(),
            store_full,
            modules,
            waiters: Arc::default(),
            module_names: Default::default(),
            otel,
            config,
            store,
            scheduler,
            sandbox,
            metrics,
            auth,
            phase,
        });
        tokio::spawn(route_events(app.clone()));
        tokio::spawn(crate::reports::route_kpis(app.clone()));
        tokio::spawn(crate::memory::trim_periodically(app.phase.subscribe()));
        tokio::spawn(crate::schedules::run_firing_loop(app.clone()));
        Ok(Self { app, listener, tls })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `stop` resolves, then drains: readiness off and new work refused at
    /// once, running attempts get `grace` to finish before they are interrupted and put
    /// back in the queue uncharged; finally the HTTP server stops.
    pub async fn run(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = self.app;
        app.phase.send_replace(Phase::Ready);
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let drain_app = app.clone();
        let drain = tokio::spawn(async move {
            stop.await;
            let grace = drain_app.config.grace;
            tracing::info!(
                ?grace,
                running = drain_app.scheduler.running(),
                "draining: readiness off, new work refused"
            );
            drain_app.phase.send_replace(Phase::Draining);
            drain_app.scheduler.shutdown(grace).await;
            tracing::info!("scheduler stopped; closing the HTTP server");
            let _ = stopped_tx.send(());
        });
        let router = crate::http::router(app.clone());
        let stopped = async move {
            let _ = stopped_rx.await;
        };
        let served = match self.tls {
            Some(acceptor) => {
                let listener = crate::tls::TlsListener::new(self.listener, acceptor)
                    .map_err(ServeError::Http)?;
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(self.listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        drain.await.ok();
        // After the scheduler's drain, so the spans of the last attempts are flushed too.
        if let Some(otel) = &app.otel {
            otel.shutdown().await;
        }
        served.map_err(ServeError::Http)?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Feeds task events into the metrics and wakes the calls waiting for a task's end.
async fn route_events(app: Arc<App>) {
    let mut events = app.scheduler.subscribe();
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Some(ended) = &event.attempt {
                    app.metrics.attempt_ended(&ended.attempt);
                }
                if event.state.is_terminal() {
                    app.metrics.task_finished(event.state);
                    app.waiters.ended(&event.task_id);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                app.metrics.events_dropped(missed);
                app.waiters.wake_all();
            }
            Err(broadcast::error::RecvError::Closed) => {
                app.waiters.wake_all();
                return;
            }
        }
    }
}

/// A store URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Memory mappings one running attempt takes when instances are allocated on demand
/// (its linear memory reservation and guard, its fiber stack and guard, ...): 7.7 measured
/// with 3,000 sleeping agents in flight.
const ON_DEMAND_MAPPINGS_PER_ATTEMPT: u64 = 8;
/// Memory mappings one worker takes with the pooling allocator: its fiber stack and guard
/// page (2, mapped at start) and, while its attempt runs, its memory in its pool slot (a
/// Rust agent's: the heap below the copy-on-write data image, the image, the heap above,
/// the rest of the slot). Measured with 10,000 sleeping agents in flight: 62,046 mappings,
/// 6.2 per worker, the rest of the process about 300 (so the 4096 reserved below cover the
/// difference). An attempt holding the most memories (4, each with data) takes about 8.7
/// besides its stack.
const POOLED_MAPPINGS_PER_WORKER: u64 = 6;
/// Mappings left for everything else in the process (code, heaps, thread stacks).
const RESERVED_MAPPINGS: u64 = 4096;

/// Refuses a worker count (the sandbox's slots) whose attempts would run out of memory
/// mappings (`vm.max_map_count`), pooled or, beyond what the pool's address space holds,
/// allocated on demand: past it, instantiation fails and threads cannot get their guard
/// pages, so the process would fail attempts or die instead of queueing.
fn check_mappings(sandbox: &SandboxConfig, pooling: bool) -> Result<(), ServeError> {
    let workers = sandbox.slots;
    let Some(max_map_count) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return Ok(());
    };
    let room = max_map_count.saturating_sub(RESERVED_MAPPINGS);
    if pooling {
        let limit = room / POOLED_MAPPINGS_PER_WORKER;
        if u64::from(workers) > limit {
            return Err(ServeError::TooManyPooledWorkers {
                workers,
                max_map_count,
                limit,
            });
        }
        return Ok(());
    }
    let limit = room / ON_DEMAND_MAPPINGS_PER_ATTEMPT;
    if u64::from(workers) > limit {
        return Err(ServeError::TooManyWorkers {
            workers,
            pooled: sandbox.max_pooled_slots(),
            max_task_memory: sandbox.max_memory_bytes,
            max_map_count,
            limit,
        });
    }
    Ok(())
}

/// Resolves when this process gets SIGTERM or SIGINT.
pub async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

/// `fabric serve`: starts, says where it listens on stderr, serves until SIGTERM or
/// SIGINT and drains.
pub async fn serve(config: ServerConfig) -> Result<(), ServeError> {
    let server = Server::start(config).await?;
    server.announce();
    server.run_until_signalled().await
}

impl Server {
    /// Logs the address and prints `listening on http://ADDR` (`https://` with TLS) on
    /// stderr (what scripts and tests wait for).
    pub fn announce(&self) {
        let addr = self.local_addr();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "listening");
        eprintln!("listening on {scheme}://{addr}");
    }

    /// [`Server::run`] until SIGTERM or SIGINT. A second signal ends it at once with
    /// [`ServeError::Interrupted`], without waiting for the drain; the caller exits then,
    /// without waiting for the tasks still running on its runtime (acknowledged work is
    /// already committed, so nothing is lost; attempts that were running are rescued at
    /// the next start).
    pub async fn run_until_signalled(self) -> Result<(), ServeError> {
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (second_tx, second_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            signal().await;
            let _ = first_tx.send(());
            signal().await;
            let _ = second_tx.send(());
        });
        let run = self.run(async move {
            let _ = first_rx.await;
        });
        tokio::select! {
            result = run => result,
            Ok(()) = second_rx => {
                tracing::warn!("second signal: exiting now");
                Err(ServeError::Interrupted)
            }
        }
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(super::redact("postgres://db/x"), "postgres://db/x");
    }
}
