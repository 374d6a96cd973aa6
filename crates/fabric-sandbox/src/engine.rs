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

/// All a 32-bit memory can address.
const FULL_MEMORY_BYTES: u64 = 4 << 30;
/// The guard region after a full 4 GiB reservation: Wasmtime's default. The reservation
/// and guard cover every 32-bit index plus a static offset below 32 MiB, so the compiled
/// code checks no bounds: an access past the memory lands on a page that is not mapped.
const FULL_MEMORY_GUARD_BYTES: u64 = 32 << 20;
/// The guard region after a smaller reservation. There the compiled code compares every
/// address with the reservation itself, so the guard keeps nobody in: it is one Wasm page
/// of defence in depth between one slot and the next.
const SMALL_MEMORY_GUARD_BYTES: u64 = 64 << 10;
/// Memories grow by whole pages of 64 KiB (custom page sizes are not enabled).
const WASM_PAGE_BYTES: u64 = 64 << 10;
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

/// The address space each linear memory reserves, sized from the largest memory an attempt
/// may have (`max_memory_bytes`): the one rule behind the engine's memory settings, the
/// pool's size and its budget.
///
/// At 4 GiB a memory reserves all a 32-bit index can reach plus a 32 MiB guard, and the
/// compiled code checks no bounds. Below 4 GiB it reserves `max_memory_bytes` rounded up to
/// whole Wasm pages plus a 64 KiB guard, and never moves, so that Cranelift checks each
/// access against the reservation, a constant (`index > reservation - offset - size`
/// traps), and pages between the memory's size and the reservation are not accessible: an
/// access there faults and traps too. A pool of 256 MiB memories then takes 16 times less
/// address space per slot, at the cost of a compare per load and store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemorySlot {
    /// The bytes a memory may grow to in place; the most any memory of the engine holds.
    pub reservation: u64,
    /// Bytes never mapped after the reservation.
    pub guard: u64,
}

impl MemorySlot {
    pub fn of(config: &SandboxConfig) -> Self {
        if config.max_memory_bytes >= FULL_MEMORY_BYTES {
            Self {
                reservation: FULL_MEMORY_BYTES,
                guard: FULL_MEMORY_GUARD_BYTES,
            }
        } else {
            Self {
                reservation: config.max_memory_bytes.next_multiple_of(WASM_PAGE_BYTES),
                guard: SMALL_MEMORY_GUARD_BYTES,
            }
        }
    }

    /// The address space one memory takes: its reservation and its guard.
    pub fn bytes(self) -> u64 {
        self.reservation + self.guard
    }

    /// Whether the compiled code checks each memory access against the bounds (the
    /// reservation and guard do not cover every 32-bit index).
    pub fn bounds_checked(self) -> bool {
        self.bytes() < FULL_MEMORY_BYTES
    }

    /// The initial sizes of the memories `bytes` define (a component's nested modules
    /// included), in order, if one is larger than the reservation. Wasmtime's pool refuses
    /// to load such a module, though it is valid: it would merely never fit. Malformed
    /// sections end the scan (the compiler reports them).
    pub fn exceeded_by(self, bytes: &[u8]) -> Option<Vec<u64>> {
        let mut sizes = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let Ok(wasmparser::Payload::MemorySection(memories)) = payload else {
                if payload.is_err() {
                    break;
                }
                continue;
            };
            for memory in memories {
                let Ok(memory) = memory else { break };
                let page = 1u64.checked_shl(memory.page_size_log2.unwrap_or(16));
                sizes.push(memory.initial.saturating_mul(page.unwrap_or(0)));
            }
        }
        sizes
            .iter()
            .any(|size| *size > self.reservation)
            .then_some(sizes)
    }

    fn configure(self, wasm: &mut Config) {
        wasm.memory_reservation(self.reservation)
            .memory_guard_size(self.guard)
            // Memories never move (the pool cannot move them anyway): the code may keep
            // the base in a register and compare with the reservation instead of loading
            // the memory's current size. A memory allocated on demand that starts larger
            // than the reservation (its attempt ends `memory_limit` before it runs) gets
            // no room to grow into.
            .memory_may_move(false)
            .memory_reservation_for_growth(0);
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
    MemorySlot::of(config).configure(&mut wasm);
    wasm
}

/// The pool holds, for every slot, the most memories, tables and core instances one
/// attempt may create: an attempt then never finds the pool exhausted by others, however
/// many of them take the per-attempt maxima (with averages, a few dozen attempts holding
/// the maxima failed every other attempt as `invalid`). Unused slots cost address space,
/// not memory. Each memory may grow to its slot's reservation, no further; the limiter
/// holds each attempt to its own memory limit below that.
fn pooling_config(config: &SandboxConfig) -> PoolingAllocationConfig {
    let slots = config.slots;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(config.max_instances))
        .total_memories(slots.saturating_mul(config.max_memories))
        .total_tables(slots.saturating_mul(config.max_tables))
        .total_stacks(slots)
        .max_memory_size(MemorySlot::of(config).reservation as usize)
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
    u64::from(config.slots) * u64::from(config.max_memories) * MemorySlot::of(config).bytes()
}

/// The most slots a pool may have within the address-space budget: more, and
/// `Pooling::Auto` allocates on demand.
pub(crate) fn max_pooled_slots(config: &SandboxConfig) -> u64 {
    POOL_ADDRESS_SPACE_BUDGET / (u64::from(config.max_memories) * MemorySlot::of(config).bytes())
}

fn build_engine(config: &SandboxConfig) -> Result<(Engine, bool), SandboxError> {
    let on_demand = || {
        Engine::new(&base_config(config))
            .map(|engine| (engine, false))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))
    };
    let slot = MemorySlot::of(config);
    tracing::debug!(
        reservation = slot.reservation,
        guard = slot.guard,
        bounds_checked = slot.bounds_checked(),
        "address space of each linear memory"
    );
    if config.pooling == Pooling::Off {
        return on_demand();
    }
    let reservation = pool_reservation(config);
    if reservation > POOL_ADDRESS_SPACE_BUDGET {
        let why = format!(
            "{} slots need {} GiB of address space, more than the {} GiB budget (at most {} \
             slots with memories of {} bytes)",
            config.slots,
            reservation >> 30,
            POOL_ADDRESS_SPACE_BUDGET >> 30,
            max_pooled_slots(config),
            config.max_memory_bytes
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(max_memory_bytes: u64) -> MemorySlot {
        MemorySlot::of(&SandboxConfig {
            max_memory_bytes,
            ..SandboxConfig::default()
        })
    }

    #[test]
    fn a_slot_reserves_the_largest_memory_in_whole_pages_plus_a_guard() {
        let full = slot(4 << 30);
        assert_eq!((full.reservation, full.guard), (4 << 30, 32 << 20));
        assert!(!full.bounds_checked());
        let small = slot(256 << 20);
        assert_eq!((small.reservation, small.guard), (256 << 20, 64 << 10));
        assert!(small.bounds_checked());
        assert_eq!(slot((256 << 20) + 1).reservation, (256 << 20) + (64 << 10));
        assert_eq!(slot(1).reservation, 64 << 10);
        assert_eq!(slot(1).bytes(), 128 << 10);
    }

    #[tokio::test]
    async fn the_next_memory_of_a_small_pool_starts_one_slot_further() {
        // What the bounds checks stand against: a module's two memories, in a fresh pool,
        // sit one slot apart, so an unchecked access a slot past the first memory's start
        // would land in the second.
        let config = SandboxConfig {
            slots: 2,
            max_memory_bytes: 8 << 20,
            pooling: Pooling::Required,
            ..SandboxConfig::default()
        };
        let (engine, pooling) = build_engine(&config).unwrap();
        assert!(pooling);
        let wasm =
            wat::parse_str(r#"(module (memory (export "a") 1) (memory (export "b") 1))"#).unwrap();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_fuel(u64::MAX).unwrap();
        let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
            .await
            .unwrap();
        let mut base = |name| {
            let memory = instance.get_memory(&mut store, name).unwrap();
            memory.data_ptr(&store) as u64
        };
        let slot = MemorySlot::of(&config).bytes();
        assert_eq!(slot, (8 << 20) + (64 << 10));
        assert_eq!(base("b") - base("a"), slot);
    }

    #[test]
    fn memories_declared_larger_than_the_slot_are_found() {
        let wasm = |source: &str| wat::parse_str(source).unwrap();
        let small = slot(1 << 20);
        // 16 pages is 1 MiB: it fits; 17 does not, nor does a second, larger memory.
        assert_eq!(small.exceeded_by(&wasm("(module (memory 16))")), None);
        assert_eq!(
            small.exceeded_by(&wasm("(module (memory 17))")),
            Some(vec![17 << 16])
        );
        assert_eq!(
            small.exceeded_by(&wasm("(module (memory 1) (memory 40 100))")),
            Some(vec![1 << 16, 40 << 16])
        );
        // Imported memories are not the module's to allocate.
        let imports = wasm(r#"(module (import "env" "m" (memory 100)))"#);
        assert_eq!(small.exceeded_by(&imports), None);
        let component = wasm("(component (core module (memory 18)))");
        assert_eq!(small.exceeded_by(&component), Some(vec![18 << 16]));
        assert_eq!(
            slot(4 << 30).exceeded_by(&wasm("(module (memory 65536))")),
            None
        );
        assert_eq!(small.exceeded_by(b"not wasm"), None);
    }
}
