//! The sandbox: runs one attempt of an untrusted WebAssembly agent in Wasmtime under hard
//! quotas (fuel, wall-clock deadline, memory, tables, stack, output) with no ambient
//! authority. This is the only crate that imports `wasmtime`.

mod cache;
mod cancel;
mod complexity;
mod config;
mod egress;
mod engine;
mod grants;
mod hostcalls;
mod limiter;
mod pipe;
mod run;
mod subtypes;
mod tasks;
mod telemetry;

use std::sync::Arc;

pub use cache::{Agent, CacheStats, LoadError, ModuleKind};
pub use cancel::CancelToken;
pub use complexity::{
    MAX_CONTROL_DEPTH, MAX_FUNCTION_BYTES, MAX_LOCALS, MAX_MODULE_COST, MAX_OPERAND_STACK,
    compile_cost,
};
pub use config::{Pooling, SandboxConfig};
pub use egress::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES, Decision,
    Destination, EgressCall, EgressCalls, EgressEvent, EgressGrant, EgressObserver, EgressPolicy,
    IDEMPOTENCY_KEY, MAX_DENIAL_URL_CHARS, MAX_LOGGED_CALLS, MAX_RECORDED_DENIALS, Rule,
    non_public,
};
pub use grants::{GrantError, GrantScan, scan_grant};
pub use hostcalls::{MAX_RANDOM_BYTES, MIN_HOSTCALL_BYTES, RANDOM_SLICE};
pub use run::{DirGrant, FUEL_SLICE, RunRequest, RunResult};
pub use tasks::{
    Child, ChildTasks, MAX_SPEC_BYTES, MAX_SPEC_BYTES_PER_ATTEMPT, SUBMIT_CALL_FUEL, SubmitRefusal,
    TaskGrant,
};
pub use telemetry::{ProgressCell, TELEMETRY_CALL_FUEL};

use fabric_types::{Attempt, ModuleId};

/// Why a sandbox could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    #[error("cannot create the Wasmtime engine: {0}")]
    Engine(String),
    #[error("cannot use the module cache directory {path}: {source}")]
    CacheDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// An engine, its module cache and its epoch ticker: everything needed to run attempts.
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Sandbox {
    engine: engine::FabricEngine,
    cache: cache::ModuleCache,
    on_spawn: std::sync::OnceLock<SpawnObserver>,
    on_egress: std::sync::OnceLock<EgressObserver>,
}

/// Called with the time from the start of an attempt until its guest was instantiated
/// (WASI context, instance, memory) and about to run: the spawn latency.
pub type SpawnObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("engine", &self.engine)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine (pooling allocator when the address space allows it, on-demand
    /// otherwise), the linkers and the module cache, and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        config.validate()?;
        let engine = engine::FabricEngine::new(&config)?;
        let cache = cache::ModuleCache::new(&engine, &config)?;
        Ok(Self {
            engine,
            cache,
            on_spawn: std::sync::OnceLock::new(),
            on_egress: std::sync::OnceLock::new(),
        })
    }

    /// Validates and compiles `bytes` (or finds them already compiled, in memory or on
    /// disk) and links them against WASI. Linking problems (an unknown import, no entry
    /// point) are not errors here: the agent loads and every attempt ends `invalid`.
    /// Modules over a per-function limit or the compile budget ([`MAX_MODULE_COST`]) are
    /// refused as [`LoadError::Invalid`] before compiling. Compiling runs on the compile
    /// threads and blocks the caller until one is free and it is done: call this from a
    /// blocking thread, never from an async worker.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Agent>, LoadError> {
        self.cache.load(&self.engine, bytes, None)
    }

    /// [`Sandbox::load`], but waits at most `wait` for a compile thread: when every one
    /// stays taken that long, gives up with [`LoadError::Busy`] without compiling. For
    /// callers that must answer in bounded time (an API call uploading a module).
    pub fn load_within(
        &self,
        bytes: &[u8],
        wait: std::time::Duration,
    ) -> Result<Arc<Agent>, LoadError> {
        self.cache.load(&self.engine, bytes, Some(wait))
    }

    /// The agent with this id, if it is loaded in memory or precompiled on disk.
    pub fn cached(&self, id: &ModuleId) -> Option<Arc<Agent>> {
        self.cache.cached(&self.engine, id)
    }

    /// Runs one attempt to its end and reports how it ended. Never fails: every way an
    /// attempt can end is an [`fabric_types::Outcome`]. Child tasks the guest submitted
    /// (only with a [`RunRequest::tasks`] grant) are dropped: a caller that grants them
    /// runs [`Sandbox::run_with_children`].
    pub async fn run(&self, agent: &Agent, request: RunRequest, cancel: &CancelToken) -> Attempt {
        self.run_with_children(agent, request, cancel).await.attempt
    }

    /// [`Sandbox::run`], also returning the child tasks the guest submitted and the host
    /// accepted, in order, however the attempt ended: the caller creates them only if it
    /// keeps the attempt as `ok`.
    pub async fn run_with_children(
        &self,
        agent: &Agent,
        request: RunRequest,
        cancel: &CancelToken,
    ) -> RunResult {
        let (spawns, egress) = (self.on_spawn.get(), self.on_egress.get());
        run::run(&self.engine, agent, request, cancel, spawns, egress).await
    }

    /// Reports every outbound request of every attempt to `observe` (for metrics). Only
    /// the first observer is kept; returns whether this one was.
    pub fn observe_egress(&self, observe: EgressObserver) -> bool {
        self.on_egress.set(observe).is_ok()
    }

    /// Reports every attempt's spawn latency to `observe` (for metrics). Only the first
    /// observer is kept; returns whether this one was.
    pub fn observe_spawns(&self, observe: SpawnObserver) -> bool {
        self.on_spawn.set(observe).is_ok()
    }

    /// Whether the engine got the pooling instance allocator.
    pub fn is_pooling(&self) -> bool {
        self.engine.pooling
    }

    /// Drops a module from the cache, in memory and on disk (a deleted module): see
    /// `ModuleCache::forget`.
    pub fn forget(&self, id: &ModuleId) {
        self.cache.forget(id);
    }

    /// Module cache counters (hits, misses, compiles, bytes held).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The configuration the sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.engine.config
    }
}
