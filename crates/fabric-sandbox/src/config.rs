//! Engine-wide settings of the sandbox, each with a documented default.

use std::path::PathBuf;
use std::time::Duration;

use crate::SandboxError;

/// Whether to use Wasmtime's pooling instance allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Pooling when the pool's address-space reservation fits, on-demand otherwise.
    #[default]
    Auto,
    /// Pooling or fail.
    Required,
    /// Always allocate on demand (slower instantiation, no up-front reservation).
    Off,
}

/// How the sandbox's engine is set up. Per-attempt limits (fuel, memory, timeout, output)
/// come with each [`crate::RunRequest`]; these are the ceilings and shapes shared by all.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Attempts that may be in flight at once: sizes the instance pool and fiber stacks.
    pub slots: u32,
    /// The most linear memory any attempt may be given, in bytes; per-attempt memory
    /// limits above it are refused. It also sizes the address space each memory reserves:
    /// at 4 GiB, all a 32-bit memory can address, and the compiled code checks no bounds;
    /// below, this much (in whole Wasm pages) and a compare on every load and store, so
    /// that the pool holds more slots ([`SandboxConfig::max_pooled_slots`]).
    pub max_memory_bytes: u64,
    /// The most elements any one table may hold.
    pub max_table_elements: u32,
    /// Core instances one attempt may create (a component creates several).
    pub max_instances: u32,
    /// Tables one attempt may create.
    pub max_tables: u32,
    /// Memories one attempt may create (multi-memory modules).
    pub max_memories: u32,
    /// Host handles (open files and directories, streams, pollables) one attempt may hold
    /// at once. Each open file of a directory grant is a host file descriptor, so this
    /// bounds the descriptors an attempt can take from the process: size the process's
    /// `RLIMIT_NOFILE` above `slots × (max_guest_handles + grants)`. Past it the attempt
    /// ends `memory_limit`.
    pub max_guest_handles: u32,
    /// Wasm stack per attempt, in bytes; deeper recursion traps with `stack_overflow`.
    pub max_wasm_stack: usize,
    /// The largest module or component accepted, in bytes.
    pub max_module_bytes: u64,
    /// How often the epoch advances: deadlines and cancellation are seen within a tick.
    pub epoch_tick: Duration,
    /// Where precompiled artifacts are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Compiled modules kept in memory, in (approximate) bytes of machine code.
    pub cache_memory_bytes: u64,
    /// Threads that compile modules, shared by every load; also the most compilations in
    /// progress at once (later loads wait their turn). The other cores stay free for
    /// running attempts and the API whatever is being compiled.
    pub compile_threads: usize,
    pub pooling: Pooling,
    /// Distinct KPI names one attempt may record; a new name past them is refused
    /// (`TelemetryRefusal::TooManyNames`), names already recorded keep recording.
    pub max_kpi_names: usize,
    /// Telemetry calls (`kpi` and `progress` together, taken or refused) one attempt may
    /// make; every call past them is refused (`TelemetryRefusal::TooManyCalls`) without
    /// reading its arguments, and still costs its fuel.
    pub max_telemetry_calls: u32,
}

impl SandboxConfig {
    pub const DEFAULT_SLOTS: u32 = 64;
    /// 4 GiB: the whole 32-bit address space of a memory.
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 4 << 30;
    pub const DEFAULT_MAX_TABLE_ELEMENTS: u32 = 20_000;
    pub const DEFAULT_MAX_INSTANCES: u32 = 16;
    pub const DEFAULT_MAX_TABLES: u32 = 16;
    pub const DEFAULT_MAX_MEMORIES: u32 = 4;
    /// 256: a Rust WASI program holds about a dozen; Wasmtime's own default is a million,
    /// which lets one guest exhaust the process's file descriptors or hold gigabytes of
    /// host memory that no memory limit sees.
    pub const DEFAULT_MAX_GUEST_HANDLES: u32 = 256;
    /// 512 KiB, Wasmtime's own default.
    pub const DEFAULT_MAX_WASM_STACK: usize = 512 << 10;
    /// 32 MiB.
    pub const DEFAULT_MAX_MODULE_BYTES: u64 = 32 << 20;
    /// 10 ms.
    pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(10);
    /// 256 MiB.
    pub const DEFAULT_CACHE_MEMORY_BYTES: u64 = 256 << 20;
    /// 64 distinct KPI names per attempt.
    pub const DEFAULT_MAX_KPI_NAMES: usize = 64;
    /// The most [`SandboxConfig::max_kpi_names`] accepted: each name holds at most 64
    /// bytes and its stats, and is stored with the attempt.
    pub const MAX_KPI_NAMES: usize = 4_096;
    /// 10,000 telemetry calls per attempt.
    pub const DEFAULT_MAX_TELEMETRY_CALLS: u32 = 10_000;
    /// The most [`SandboxConfig::compile_threads`] accepted.
    pub const MAX_COMPILE_THREADS: usize = 256;

    /// Half the cores this process may use, at least 1: the default `compile_threads`.
    pub fn default_compile_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// The most `slots` the pooling allocator may have with these `max_memory_bytes` and
    /// `max_memories`: every slot reserves address space for its memories, and the pool
    /// keeps within 64 TiB. With more slots, instances are allocated on demand
    /// (`Pooling::Auto`) or the sandbox is refused (`Pooling::Required`).
    pub fn max_pooled_slots(&self) -> u64 {
        crate::engine::max_pooled_slots(self)
    }

    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        let err = |m: &str| Err(SandboxError::Config(m.to_string()));
        if self.slots == 0 {
            return err("slots must be at least 1");
        }
        if self.max_memory_bytes == 0 || self.max_memory_bytes > 4 << 30 {
            return err("max_memory_bytes must be between 1 byte and 4 GiB");
        }
        if self.max_instances == 0 || self.max_memories == 0 || self.max_tables == 0 {
            return err("max_instances, max_memories and max_tables must be at least 1");
        }
        if self.max_guest_handles < 16 {
            return err("max_guest_handles must be at least 16 (stdio alone takes several)");
        }
        if self.max_wasm_stack < 64 << 10 || self.max_wasm_stack > 64 << 20 {
            return err("max_wasm_stack must be between 64 KiB and 64 MiB");
        }
        if self.epoch_tick < Duration::from_millis(1) || self.epoch_tick > Duration::from_secs(1) {
            return err("epoch_tick must be between 1ms and 1s");
        }
        if self.max_module_bytes == 0 {
            return err("max_module_bytes must be at least 1");
        }
        if self.compile_threads == 0 || self.compile_threads > Self::MAX_COMPILE_THREADS {
            return err("compile_threads must be between 1 and 256");
        }
        if self.max_kpi_names == 0 || self.max_kpi_names > Self::MAX_KPI_NAMES {
            return err("max_kpi_names must be between 1 and 4096");
        }
        if self.max_telemetry_calls == 0 {
            return err("max_telemetry_calls must be at least 1");
        }
        Ok(())
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            slots: Self::DEFAULT_SLOTS,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: Self::DEFAULT_MAX_TABLE_ELEMENTS,
            max_instances: Self::DEFAULT_MAX_INSTANCES,
            max_tables: Self::DEFAULT_MAX_TABLES,
            max_memories: Self::DEFAULT_MAX_MEMORIES,
            max_guest_handles: Self::DEFAULT_MAX_GUEST_HANDLES,
            max_wasm_stack: Self::DEFAULT_MAX_WASM_STACK,
            max_module_bytes: Self::DEFAULT_MAX_MODULE_BYTES,
            epoch_tick: Self::DEFAULT_EPOCH_TICK,
            cache_dir: None,
            cache_memory_bytes: Self::DEFAULT_CACHE_MEMORY_BYTES,
            compile_threads: Self::default_compile_threads(),
            pooling: Pooling::Auto,
            max_kpi_names: Self::DEFAULT_MAX_KPI_NAMES,
            max_telemetry_calls: Self::DEFAULT_MAX_TELEMETRY_CALLS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaller_memories_let_the_pool_hold_more_slots() {
        let slots = |max_memory_bytes| {
            SandboxConfig {
                max_memory_bytes,
                ..SandboxConfig::default()
            }
            .max_pooled_slots()
        };
        // 64 TiB / (4 memories × (4 GiB + 32 MiB)).
        assert_eq!(slots(4 << 30), 4_064);
        // 64 TiB / (4 memories × (256 MiB + 64 KiB)): the server's default.
        assert_eq!(slots(256 << 20), 65_520);
        assert_eq!(slots((256 << 20) - 1), 65_520, "rounded up to whole pages");
        assert!(slots(1) > 60_000_000);
    }

    #[test]
    fn telemetry_limits_are_validated() {
        let ok = SandboxConfig::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.max_kpi_names, 64);
        assert_eq!(ok.max_telemetry_calls, 10_000);
        for (names, calls, refused) in [
            (0, 10_000, "max_kpi_names"),
            (SandboxConfig::MAX_KPI_NAMES + 1, 10_000, "max_kpi_names"),
            (64, 0, "max_telemetry_calls"),
        ] {
            let config = SandboxConfig {
                max_kpi_names: names,
                max_telemetry_calls: calls,
                ..SandboxConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(refused), "{error}");
        }
        let widest = SandboxConfig {
            max_kpi_names: SandboxConfig::MAX_KPI_NAMES,
            max_telemetry_calls: u32::MAX,
            ..SandboxConfig::default()
        };
        assert!(widest.validate().is_ok());
    }
}
