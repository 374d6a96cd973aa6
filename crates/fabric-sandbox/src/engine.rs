//! The one place every Wasmtime setting is made: the engine (Cranelift, fuel, epochs,
//! pooling or on-demand allocation), the WASI linkers, the epoch ticker thread, and the
//! bounded pool of threads that compiles.

use std::sync::{Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use wasmtime_wasi::I32Exit;

use crate::run::{P1Guest, P2Guest};
use crate::{Pooling, SandboxConfig, SandboxError};

/// Virtual address space one pooled memory slot reserves on x86-64: Wasmtime's 4 GiB
/// reservation plus its 32 MiB guard region.
const MEMORY_SLOT_RESERVATION: u64 = (4 << 30) + (32 << 20);
/// The largest memory a pooled slot may hold: all a 32-bit memory can address, which the
/// slot's reservation ([`MEMORY_SLOT_RESERVATION`]) covers anyway. The pool does not cap
/// memory at `max_memory_bytes`: were it to, a valid module declaring more initial memory
/// would fail to load, as if it were broken. Each attempt's memory limit (at most
/// `max_memory_bytes`) is held by its limiter, so such a module loads and its attempts end
/// `memory_limit`.
const POOL_MAX_MEMORY_BYTES: usize = 4 << 30;
/// The most address space the pool may reserve before `Pooling::Auto` falls back to
/// on-demand allocation: half of the 128 TiB a 47-bit user address space has.
const POOL_ADDRESS_SPACE_BUDGET: u64 = 64 << 40;
/// Bytes of each pooled memory kept resident between instances: dirty pages below this are
/// found with `PAGEMAP_SCAN` (Linux 6.7+) and reset with `memset` instead of being unmapped,
/// so the next instance does not fault them in again. Measured on the echo agent: 26 µs per
/// attempt without, 9 µs with.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Bytes of each pooled table kept resident between instances, likewise.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
/// Fiber stack headroom above the Wasm stack, for host functions called from Wasm.
const HOST_STACK_HEADROOM: usize = 1 << 20;

/// The engine plus what is built once per engine.
pub(crate) struct FabricEngine {
    pub engine: Engine,
    pub config: SandboxConfig,
    pub pooling: bool,
    pub p1_linker: wasmtime::Linker<P1Guest>,
    pub p2_linker: wasmtime::component::Linker<P2Guest>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for FabricEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricEngine")
            .field("pooling", &self.pooling)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FabricEngine {
    pub fn new(config: &SandboxConfig) -> Result<Self, SandboxError> {
        let (engine, pooling) = build_engine(config)?;
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));

        let mut p1_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1_linker, |guest: &mut P1Guest| {
            &mut guest.wasi
        })
        .map_err(engine_err)?;
        // wasmtime-wasi refuses `proc_exit` codes of 126 and above with a host error, which
        // would make `exit(126)` look like a trap. Report every code as the guest gave it.
        p1_linker
            .allow_shadowing(true)
            .func_wrap(
                "wasi_snapshot_preview1",
                "proc_exit",
                |code: i32| -> wasmtime::Result<()> { Err(I32Exit(code).into()) },
            )
            .map_err(engine_err)?
            .allow_shadowing(false);
        crate::hostcalls::shadow_random_get(&mut p1_linker).map_err(engine_err)?;
        crate::telemetry::add_to_p1_linker(&mut p1_linker).map_err(engine_err)?;
        crate::tasks::add_to_p1_linker(&mut p1_linker).map_err(engine_err)?;
        let mut p2_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2_linker).map_err(engine_err)?;
        // wasi:http for every component: a request no granted policy allows is denied.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2_linker)
            .map_err(engine_err)?;
        crate::telemetry::add_to_p2_linker(&mut p2_linker).map_err(engine_err)?;
        crate::tasks::add_to_p2_linker(&mut p2_linker).map_err(engine_err)?;

        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(Self {
            engine,
            config: config.clone(),
            pooling,
            p1_linker,
            p2_linker,
            _ticker: ticker,
        })
    }
}

/// A thread pool of `compile_threads` threads (Wasmtime's parallel compilation runs on
/// the rayon pool it is called from), and a gate that lets that many compilations in at
/// once, so that waiting compilations hold no memory.
pub(crate) struct CompilePool {
    pool: rayon::ThreadPool,
    limit: usize,
    running: Mutex<usize>,
    freed: Condvar,
}

impl CompilePool {
    pub fn new(threads: usize) -> Result<Self, SandboxError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fabric-compile-{i}"))
            .build()
            .map_err(|e| SandboxError::Engine(format!("cannot start the compile threads: {e}")))?;
        Ok(Self {
            pool,
            limit: threads,
            running: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Runs `compile` on the pool once fewer than `compile_threads` compilations are in
    /// progress, blocking the calling thread (call it from a blocking thread, never from an
    /// async worker) until it is done. Wasmtime's parallel compilation of the functions
    /// then uses the pool's threads, never the others. With `wait`, gives up (`Err`, with
    /// the compilations in progress) when no compile thread came free within it.
    pub fn run<T: Send>(
        &self,
        wait: Option<Duration>,
        compile: impl FnOnce() -> T + Send,
    ) -> Result<T, usize> {
        let give_up = wait.map(|wait| Instant::now() + wait);
        {
            let mut running = self.running.lock().expect("compile gate poisoned");
            while *running >= self.limit {
                running = match give_up {
                    None => self.freed.wait(running).expect("compile gate poisoned"),
                    Some(at) => {
                        let left = at.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(*running);
                        }
                        self.freed
                            .wait_timeout(running, left)
                            .expect("compile gate poisoned")
                            .0
                    }
                };
            }
            *running += 1;
        }
        let _leave = Leave(self);
        Ok(self.pool.install(compile))
    }

    /// Compilations in progress now.
    pub fn running(&self) -> usize {
        *self.running.lock().expect("compile gate poisoned")
    }
}

/// Lets the next compilation in when one ends, even by a panic.
struct Leave<'a>(&'a CompilePool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().expect("compile gate poisoned");
        *running -= 1;
        self.0.freed.notify_one();
    }
}

fn base_config(config: &SandboxConfig) -> Config {
    let mut wasm = Config::new();
    wasm.cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + HOST_STACK_HEADROOM)
        .memory_init_cow(true)
        .wasm_multi_memory(true)
        .wasm_component_model(true);
    wasm
}

/// The pool holds, for every slot, the most memories, tables and core instances one
/// attempt may create: an attempt then never finds the pool exhausted by others, however
/// many of them take the per-attempt maxima (with averages, a few dozen attempts holding
/// the maxima failed every other attempt as `invalid`). Unused slots cost address space,
/// not memory.
fn pooling_config(config: &SandboxConfig) -> PoolingAllocationConfig {
    let slots = config.slots;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(config.max_instances))
        .total_memories(slots.saturating_mul(config.max_memories))
        .total_tables(slots.saturating_mul(config.max_tables))
        .total_stacks(slots)
        .max_memory_size(POOL_MAX_MEMORY_BYTES)
        .table_elements(config.max_table_elements as usize)
        .max_memories_per_module(config.max_memories)
        .max_tables_per_module(config.max_tables)
        .max_core_instances_per_component(config.max_instances)
        .max_memories_per_component(config.max_memories)
        .max_tables_per_component(config.max_tables)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// The address space the pool would reserve for memories, in bytes.
pub(crate) fn pool_reservation(config: &SandboxConfig) -> u64 {
    u64::from(config.slots) * u64::from(config.max_memories) * MEMORY_SLOT_RESERVATION
}

fn build_engine(config: &SandboxConfig) -> Result<(Engine, bool), SandboxError> {
    let on_demand = || {
        Engine::new(&base_config(config))
            .map(|engine| (engine, false))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))
    };
    if config.pooling == Pooling::Off {
        return on_demand();
    }
    let reservation = pool_reservation(config);
    if reservation > POOL_ADDRESS_SPACE_BUDGET {
        let why = format!(
            "{} slots need {} GiB of address space, more than the {} GiB budget",
            config.slots,
            reservation >> 30,
            POOL_ADDRESS_SPACE_BUDGET >> 30
        );
        if config.pooling == Pooling::Required {
            return Err(SandboxError::Engine(format!("pooling allocator: {why}")));
        }
        tracing::warn!("pooling allocator not used: {why}; allocating instances on demand");
        return on_demand();
    }
    let mut wasm = base_config(config);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(config)));
    match Engine::new(&wasm) {
        Ok(engine) => Ok((engine, true)),
        Err(e) if config.pooling == Pooling::Auto => {
            tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable; allocating instances on demand");
            on_demand()
        }
        Err(e) => Err(SandboxError::Engine(format!("pooling allocator: {e:#}"))),
    }
}

/// A thread that advances the engine's epoch every tick until it is dropped.
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("fabric-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
