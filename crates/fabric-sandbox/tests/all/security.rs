//! The attack suite: each `attack_` test runs a guest that really tries one way out of
//! its quotas or its capabilities, asserts exactly how the attempt ended, and then that
//! the sandbox still serves ordinary work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fabric_sandbox::{
    CancelToken, DirGrant, LoadError, Pooling, RunRequest, Sandbox, SandboxConfig,
};
use fabric_types::{Attempt, Limits, Outcome};

use crate::util::*;

// WASI preview 1 errno values.
const ESUCCESS: u32 = 0;
const EBADF: u32 = 8;
const ENOTSOCK: u32 = 57;
const ENOTSUP: u32 = 58;
/// What wasmtime-wasi 48 answers for a path that leaves its directory (by `..`, by being
/// absolute, or through a symlink): `EPERM`, where WASI also allows `ENOTCAPABLE`.
const EPERM: u32 = 63;

fn timeout_ms(ms: u64) -> Limits {
    Limits {
        timeout_ms: ms,
        ..tight()
    }
}

/// Runs `wasm` once on the shared sandbox with `input`, `limits` and `dirs` granted.
async fn attempt(wasm: &[u8], input: &[u8], limits: Limits, dirs: Vec<DirGrant>) -> Attempt {
    let agent = load(wasm);
    let request = RunRequest {
        input: input.to_vec(),
        limits,
        dirs,
        ..RunRequest::default()
    };
    sandbox().run(&agent, request, &CancelToken::new()).await
}

/// The timeout fired, no earlier than asked and no more than `late` after it.
#[track_caller]
fn assert_timed_out_within(attempt: &Attempt, timeout_ms: u64, late: Duration) {
    assert_outcome(attempt, Outcome::Timeout);
    assert!(
        attempt.usage.wall_ms >= timeout_ms,
        "ended early: {attempt:?}"
    );
    assert!(
        attempt.usage.wall_ms <= timeout_ms + late.as_millis() as u64,
        "ended more than {late:?} after its timeout: {attempt:?}"
    );
}

/// A WASI preview 1 command written in the test: `_start`'s body, extra functions, extra
/// imports, and text constants placed in memory by [`Wat::text`]. Every module gets a
/// printing kit: `$puts(ptr, len)` writes memory to stdout, `$putu(n)` writes an unsigned
/// decimal, `$nl` a newline. Memory: page 0 holds the kit (0..64) and the texts (from
/// 0x1000); page 1 (0x10000..) is free scratch space.
struct Wat {
    imports: String,
    funcs: String,
    data: String,
    next_text: u32,
    pages: u32,
}

impl Wat {
    fn new() -> Self {
        Self {
            imports: String::new(),
            funcs: String::new(),
            data: String::new(),
            next_text: 0x1000,
            pages: 2,
        }
    }

    /// Imports `wasi_snapshot_preview1.NAME` as `$NAME` with the signature `sig`.
    fn import(mut self, name: &str, sig: &str) -> Self {
        writeln!(
            self.imports,
            r#"(import "wasi_snapshot_preview1" "{name}" (func ${name} {sig}))"#
        )
        .unwrap();
        self
    }

    fn func(mut self, func: &str) -> Self {
        self.funcs.push_str(func);
        self.funcs.push('\n');
        self
    }

    /// Places `text` in memory; returns the two operands `(i32.const PTR) (i32.const LEN)`.
    fn text(&mut self, text: &str) -> String {
        let ptr = self.next_text;
        writeln!(
            self.data,
            "(data (i32.const {ptr}) \"{}\")",
            escape(text.as_bytes())
        )
        .unwrap();
        self.next_text += (text.len() as u32).div_ceil(16) * 16 + 16;
        assert!(self.next_text < 0x10000, "texts overflow page 0");
        format!("(i32.const {ptr}) (i32.const {})", text.len())
    }

    /// The module, with `_start` made of `locals` and `body`.
    fn build(&self, locals: &str, body: &str) -> Vec<u8> {
        let source = format!(
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") {pages})
  (data (i32.const 48) "\n")
  {data}
  (func $puts (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $putu (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 48))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 0x30) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (call $puts (local.get $p) (i32.sub (i32.const 48) (local.get $p))))
  (func $nl (call $puts (i32.const 48) (i32.const 1)))
  {funcs}
  (func (export "_start") {locals}
    {body}))"#,
            imports = self.imports,
            pages = self.pages,
            data = self.data,
            funcs = self.funcs,
        );
        wat::parse_str(&source).unwrap_or_else(|e| panic!("{e}\n{source}"))
    }
}

/// `bytes` as the inside of a WAT string literal.
fn escape(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b" ./_-=:".contains(b) {
            out.push(*b as char);
        } else {
            write!(out, "\\{b:02x}").unwrap();
        }
        out
    })
}

/// Every line of `attempt`'s stdout.
fn lines(attempt: &Attempt) -> Vec<String> {
    text(&attempt.output).lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_cpu_endless_loop_in_start_is_stopped_by_the_timeout() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("loop_forever", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(attempt.usage.fuel_consumed > 0, "{attempt:?}");
    assert!(attempt.usage.fuel_consumed < limits.fuel, "{attempt:?}");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_endless_start_function_is_stopped_during_instantiation() {
    let attempt = run_fixture("start_loop", timeout_ms(300)).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(
        attempt.usage.fuel_consumed > 0,
        "the start function ran: {attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_clock_time_get_busy_loop_that_fuel_undercounts_times_out() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("busy_host_calls", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    // 300 ms of host calls billed well under 1% of the budget: fuel alone would have let
    // this guest run for minutes.
    assert!(
        attempt.usage.fuel_consumed < limits.fuel / 100,
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_random_get_busy_loop_that_fuel_undercounts_times_out() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("random_get_loop", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(
        attempt.usage.fuel_consumed < limits.fuel / 100,
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_long_poll_oneoff_sleep_ends_within_a_tick_of_a_short_timeout() {
    let agent = load(&fabric_agents::fixture("sleep_poll_oneoff"));
    let request = RunRequest {
        limits: timeout_ms(100),
        ..RunRequest::default()
    };
    let started = Instant::now();
    let attempt = sandbox().run(&agent, request, &CancelToken::new()).await;
    let took = started.elapsed();
    // The guest asked for 60 s; the wall-clock race drops it at its deadline, which does
    // not wait for an epoch tick. Allow three ticks of scheduling noise on a busy machine.
    assert_timed_out_within(&attempt, 100, TICK * 3);
    assert!(took < Duration::from_millis(100) + TICK * 3, "{took:?}");
    assert_serves(sandbox()).await;
}

/// A module whose `_start` counts a local down from `n` to zero: per iteration
/// `local.get`, `i32.eqz`, `br_if`, `local.get`, `i32.const`, `i32.sub`, `local.set`,
/// `br` (8 units of fuel; `block`, `loop` and `end` are free).
fn countdown(n: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (local.set $n (i32.const {n}))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))))"#
    ))
    .unwrap()
}

/// Fuel a loop of known instruction count is billed, from outside the loop.
const COUNTDOWN_FUEL_PER_ITERATION: u64 = 8;
/// What a countdown is billed besides its iterations: the entry, the first `local.set`
/// and the last test. Documented band: 0..=16.
const COUNTDOWN_FUEL_OVERHEAD: std::ops::RangeInclusive<u64> = 0..=16;

#[tokio::test]
async fn attack_cpu_fuel_of_a_loop_of_known_instruction_count_is_exact() {
    let n = 3_000_000; // three fuel slices: the slicing must not lose or add fuel
    let fuel = |n: u32| async move {
        let attempt = run(&countdown(n), b"").await;
        assert_outcome(&attempt, Outcome::Ok);
        attempt.usage.fuel_consumed
    };
    let (once, twice) = (fuel(n).await, fuel(2 * n).await);
    assert_eq!(
        twice - once,
        COUNTDOWN_FUEL_PER_ITERATION * u64::from(n),
        "each iteration costs exactly its 8 counted instructions"
    );
    let overhead = once - COUNTDOWN_FUEL_PER_ITERATION * u64::from(n);
    assert!(
        COUNTDOWN_FUEL_OVERHEAD.contains(&overhead),
        "overhead {overhead} outside the documented band {COUNTDOWN_FUEL_OVERHEAD:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_the_same_program_costs_the_same_fuel_twice() {
    for wasm in [
        countdown(12_345),
        fabric_agents::p1::SHA256.to_vec(),
        fabric_agents::p2::SHA256.to_vec(),
    ] {
        let first = run(&wasm, b"the same input").await;
        let second = run(&wasm, b"the same input").await;
        assert_outcome(&first, Outcome::Ok);
        assert_outcome(&second, Outcome::Ok);
        assert_eq!(first.output, second.output);
        assert_eq!(
            first.usage.fuel_consumed, second.usage.fuel_consumed,
            "fuel is deterministic"
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_fuel_budget_stops_an_endless_loop_at_exactly_the_budget() {
    let limits = Limits {
        fuel: 2_500_000,
        ..tight()
    };
    let attempt = run_fixture("loop_forever", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 2_500_000);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_bulk_memory_fill_is_billed_per_byte() {
    // One `memory.fill` of 16 MiB is one instruction but 16 Mi bytes of work.
    let fill = |times: u32| {
        wat::parse_str(format!(
            r#"(module
  (memory (export "memory") 300)
  (func (export "_start") (local $i i32)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.const 0x1000000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {times}))))))"#
        ))
        .unwrap()
    };
    let once = run(&fill(1), b"").await;
    assert_outcome(&once, Outcome::Ok);
    assert!(
        (0x100_0000..0x100_0000 + 32).contains(&once.usage.fuel_consumed),
        "{once:?}"
    );
    // A budget of 100 Mi fuel allows six fills, not a million.
    let limits = Limits {
        fuel: 100 << 20,
        ..tight()
    };
    let many = run_with(&fill(1_000_000), b"", limits).await;
    assert_outcome(&many, Outcome::OutOfFuel);
    assert!(many.usage.wall_ms < 1_000, "{many:?}");
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_memory_grow_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..tight()
    };
    let attempt = run_fixture("memory_bomb", limits).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert_eq!(attempt.usage.peak_memory_bytes, 16 << 20, "{attempt:?}");
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .starts_with("memory limit"),
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_one_huge_grow_hits_the_memory_limit() {
    // 65535 pages at once (4 GiB, the whole 32-bit space), then -1 pages (u32::MAX).
    for delta in ["65535", "-1"] {
        let mut wat = Wat::new();
        let said = wat.text("grow returned ");
        let wasm = wat.build(
            "(local $got i32)",
            &format!(
                "(local.set $got (memory.grow (i32.const {delta})))
                 (call $puts {said}) (call $putu (local.get $got)) (call $nl)"
            ),
        );
        let attempt = run(&wasm, b"").await;
        assert_outcome(&attempt, Outcome::MemoryLimit);
        assert_eq!(attempt.output, b"", "the guest never saw the answer");
        assert_eq!(
            attempt.usage.peak_memory_bytes,
            2 << 16,
            "{delta}: {attempt:?}"
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_initial_memory_above_the_cap_is_never_allocated() {
    let attempt = run_fixture("initial_memory_huge", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert_eq!(attempt.usage.peak_memory_bytes, 0, "{attempt:?}");
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .starts_with("memory limit")
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_several_memories_are_capped_together() {
    let attempt = run_fixture("many_memories", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    // Two memories of 25 MiB fit under 64 MiB; the third does not.
    assert_eq!(
        attempt.usage.peak_memory_bytes,
        2 * 400 * 65536,
        "{attempt:?}"
    );
    assert!(
        attempt.error.as_deref().unwrap().contains("in all"),
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_table_grow_bomb_hits_the_table_limit() {
    let attempt = run_fixture("table_bomb", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(
        attempt.error.as_deref().unwrap().starts_with("table limit"),
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_huge_initial_table_is_refused_at_load() {
    let wasm = wat::parse_str(
        r#"(module
  (memory (export "memory") 1)
  (table 10000000 funcref)
  (func (export "_start")))"#,
    )
    .unwrap();
    match sandbox().load(&wasm) {
        Err(LoadError::Invalid(why)) => assert!(
            why.contains("minimum element size of 10000000")
                && why.contains(&SandboxConfig::DEFAULT_MAX_TABLE_ELEMENTS.to_string()),
            "{why}"
        ),
        other => panic!("a 10M-element table loaded: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

/// A module with `pages` of memory and one data segment of `bytes` bytes of 'x' at 0;
/// `_start` prints the last byte of the segment.
fn big_data_segment(pages: u32, bytes: usize) -> Vec<u8> {
    let mut source = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const {last}))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (data (i32.const 16) ""#,
        last = 16 + bytes - 1
    );
    source.extend(std::iter::repeat_n('x', bytes));
    source.push_str("\"))");
    wat::parse_str(&source).unwrap()
}

#[tokio::test]
async fn attack_memory_huge_data_segment_is_refused_under_a_small_cap() {
    let wasm = big_data_segment(160, 8 << 20);
    // Control: under the default 64 MiB cap the 8 MiB segment is there.
    let fits = run(&wasm, b"").await;
    assert_outcome(&fits, Outcome::Ok);
    assert_eq!(fits.output, b"x");
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..tight()
    };
    let refused = run_with(&wasm, b"", limits).await;
    assert_outcome(&refused, Outcome::MemoryLimit);
    assert_eq!(refused.usage.peak_memory_bytes, 0, "{refused:?}");
    assert_eq!(refused.output, b"");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_data_segment_past_the_end_traps_at_instantiation() {
    let attempt = run_fixture("huge_data_segment", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("memory_out_of_bounds"));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_deep_recursion_overflows_the_wasm_stack_not_the_host() {
    let attempt = run_fixture("deep_recursion", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("stack_overflow"));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_memory_a_frame_larger_than_the_stack_overflows_cleanly() {
    // On a sandbox with a 64 KiB Wasm stack: 5,000 v128 locals live across a call to the
    // host (which nothing can inline) make the caller spill them all, an 80 KB frame,
    // more than the whole stack. The prologue must check the frame against the limit
    // rather than let it reach past the guard page.
    // (Frames are bounded before compiling too: at most 10,000 locals and 2,000 values on
    // a function's operand stack; see docs/threat-model.md, finding 3.)
    let small_stack = Sandbox::new(SandboxConfig {
        slots: 2,
        max_wasm_stack: 64 << 10,
        pooling: Pooling::Off,
        ..SandboxConfig::default()
    })
    .unwrap();
    let values = 5_000;
    let source = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local {locals})
    {loads}
    (drop (call $yield))
    (i32.const 0)
    (local.get 0)
    {adds}
    (v128.store)))"#,
        locals = "v128 ".repeat(values),
        // Distinct addresses, so that no two loads are the same value to the optimizer,
        // and a store at the end, so that none is dead.
        loads = (0..values)
            .map(|i| format!(
                "(local.set {i} (v128.load offset={} (i32.const 0))) ",
                16 * i
            ))
            .collect::<String>(),
        adds = (1..values)
            .map(|i| format!("(i32x4.add (local.get {i})) "))
            .collect::<String>(),
    );
    let agent = small_stack.load(&wat::parse_str(&source).unwrap()).unwrap();
    let request = RunRequest {
        limits: tight(),
        ..RunRequest::default()
    };
    let attempt = small_stack.run(&agent, request, &CancelToken::new()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("stack_overflow"));
    // Control: the same frame fits the shared sandbox's 512 KiB stack.
    let fits = run(&wat::parse_str(&source).unwrap(), b"").await;
    assert_outcome(&fits, Outcome::Ok);
    assert_serves(&small_stack).await;
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_output_stdout_flood_is_capped_and_flagged() {
    let attempt = run_fixture("stdout_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
    assert!(attempt.output.iter().all(|b| *b == b'x'));
    assert!(attempt.output_truncated);
    assert!(!attempt.stderr_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_stderr_flood_is_capped_and_flagged() {
    let attempt = run_fixture("stderr_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.stderr.len() as u64, Limits::DEFAULT_LOG_BYTES);
    assert!(attempt.stderr_truncated);
    assert!(attempt.output.is_empty() && !attempt.output_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_endless_writer_ends_by_timeout_with_capped_output() {
    let attempt = run_fixture("write_forever", timeout_ms(300)).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
    assert!(attempt.output_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_endless_writer_ends_by_fuel_with_capped_output() {
    let limits = Limits {
        fuel: 200_000,
        output_bytes: 4096,
        ..tight()
    };
    let attempt = run_fixture("write_forever", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 200_000);
    assert_eq!(attempt.output.len(), 4096);
    assert!(attempt.output_truncated);
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// A module that, for every fd in 0..=64, tries `fd_read` (16 bytes), `fd_write` (an
/// empty buffer, so stdout stays clean) and `fd_prestat_get`, printing
/// "fd N read=E write=E prestat=E".
fn fd_prober() -> Vec<u8> {
    let mut wat = Wat::new()
        .import("fd_read", "(param i32 i32 i32 i32) (result i32)")
        .import("fd_prestat_get", "(param i32 i32) (result i32)");
    let (fd, read, write, prestat) = (
        wat.text("fd "),
        wat.text(" read="),
        wat.text(" write="),
        wat.text(" prestat="),
    );
    // iovec { 0x10100, 16 } at 0x10000; an empty iovec at 0x10010; results at 0x10020.
    wat.build(
        "(local $fd i32)",
        &format!(
            r#"
    (i32.store (i32.const 0x10000) (i32.const 0x10100))
    (i32.store (i32.const 0x10004) (i32.const 16))
    (i32.store (i32.const 0x10010) (i32.const 0x10100))
    (i32.store (i32.const 0x10014) (i32.const 0))
    (loop $each
      (call $puts {fd}) (call $putu (local.get $fd))
      (call $puts {read})
      (call $putu (call $fd_read (local.get $fd) (i32.const 0x10000) (i32.const 1)
        (i32.const 0x10020)))
      (call $puts {write})
      (call $putu (call $fd_write (local.get $fd) (i32.const 0x10010) (i32.const 1)
        (i32.const 0x10020)))
      (call $puts {prestat})
      (call $putu (call $fd_prestat_get (local.get $fd) (i32.const 0x10020)))
      (call $nl)
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $each (i32.le_u (local.get $fd) (i32.const 64))))"#
        ),
    )
}

#[tokio::test]
async fn attack_files_every_fd_from_0_to_64_holds_nothing_but_stdio() {
    let attempt = run(&fd_prober(), b"").await;
    assert_outcome(&attempt, Outcome::Ok);
    let expected: Vec<String> = (0..=64)
        .map(|fd| {
            let (read, write) = match fd {
                0 => (ESUCCESS, EBADF), // stdin reads its (empty) input
                1 | 2 => (EBADF, ESUCCESS),
                _ => (EBADF, EBADF),
            };
            format!("fd {fd} read={read} write={write} prestat={EBADF}")
        })
        .collect();
    assert_eq!(lines(&attempt), expected);
    assert_serves(sandbox()).await;
}

/// A module that tries `path_open` of each of `paths` relative to each of `dirfds`
/// (following symlinks, asking only to read) and prints "open FD PATH errno=E"; on
/// success it also reads up to 64 bytes and prints them as "read: TEXT".
fn path_opener(dirfds: &[u32], paths: &[&str]) -> Vec<u8> {
    let mut wat = Wat::new()
        .import("fd_read", "(param i32 i32 i32 i32) (result i32)")
        .import(
            "path_open",
            "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
        )
        .func(
            r#"(func $show (param $fd i32)
    (i32.store (i32.const 0x10000) (i32.const 0x10100))
    (i32.store (i32.const 0x10004) (i32.const 64))
    (if (i32.eqz (call $fd_read (local.get $fd) (i32.const 0x10000) (i32.const 1)
          (i32.const 0x10020)))
      (then (call $puts (i32.const 0x10100) (i32.load (i32.const 0x10020))))))"#,
        );
    let (open, errno, read) = (wat.text("open "), wat.text(" errno="), wat.text("read: "));
    let mut body = String::new();
    for dirfd in dirfds {
        for path in paths {
            let label = wat.text(&format!("{dirfd} {path}"));
            let ptr_len = wat.text(path);
            write!(
                body,
                r#"
    (call $puts {open}) (call $puts {label}) (call $puts {errno})
    (local.set $e (call $path_open (i32.const {dirfd}) (i32.const 1) {ptr_len}
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0x10030)))
    (call $putu (local.get $e)) (call $nl)
    (if (i32.eqz (local.get $e)) (then
      (call $puts {read}) (call $show (i32.load (i32.const 0x10030))) (call $nl)))"#
            )
            .unwrap();
        }
    }
    wat.build("(local $e i32)", &body)
}

#[tokio::test]
async fn attack_files_path_open_without_a_grant_fails_for_every_dirfd_and_path() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let secret_path = secret.path().to_str().unwrap();
    let paths = [
        "/etc/passwd",
        "../../etc/passwd",
        "etc/passwd",
        ".",
        "/",
        secret_path,
    ];
    let attempt = run(&path_opener(&[0, 1, 2, 3, 4, 5, 64], &paths), b"").await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    assert_eq!(report.len(), 7 * paths.len(), "{report:#?}");
    for line in &report {
        // No fd is a directory: stdio is refused as a base like the fds that do not exist.
        assert!(line.ends_with(&format!(" errno={EBADF}")), "{line}");
    }
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ] {
        let attempt = run(wasm, format!("read {secret_path}\nlist /\n").as_bytes()).await;
        assert_outcome(&attempt, Outcome::Ok);
        for line in lines(&attempt) {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
        assert!(!text(&attempt.output).contains("host secret"));
    }
    assert_serves(sandbox()).await;
}

/// A host tree for the grant tests: `granted/` (granted as `/data`) beside `outside/`,
/// which holds a secret and which symlinks in `granted/` point to.
struct Tree {
    _root: tempfile::TempDir,
    granted: PathBuf,
    secret: PathBuf,
}

const HELLO: &str = "hello from the host";
const SECRET: &str = "TOP SECRET: outside the grant";

fn tree() -> Tree {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(granted.join("hello.txt"), HELLO).unwrap();
    std::fs::write(granted.join("sub/inner.txt"), "inner").unwrap();
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, SECRET).unwrap();
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, granted.join(name)).unwrap();
    };
    link(&secret, "escape_abs");
    link(Path::new("../outside/secret.txt"), "escape_rel");
    link(Path::new("../outside"), "escape_dir");
    link(Path::new("/etc/passwd"), "escape_etc");
    link(Path::new("hello.txt"), "inside_link");
    Tree {
        _root: root,
        granted,
        secret,
    }
}

impl Tree {
    fn grant(&self) -> Vec<DirGrant> {
        vec![DirGrant::read_only(&self.granted, "/data")]
    }

    /// Every entry under the granted directory with its kind, contents or link target,
    /// length and modification time.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_symlink() {
                    format!("link -> {:?}", std::fs::read_link(&path).unwrap())
                } else if meta.is_dir() {
                    walk(&path, out);
                    "dir".to_owned()
                } else {
                    format!("file {:?}", std::fs::read(&path).unwrap())
                };
                let mtime = meta.modified().unwrap();
                out.insert(path, format!("{what} len={} mtime={mtime:?}", meta.len()));
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.granted, &mut out);
        out
    }
}

/// Runs the probe agent (p1 and p2) with `commands` and `dirs` granted; returns each
/// one's result lines.
async fn probe_granted(commands: &str, dirs: Vec<DirGrant>) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ] {
        let attempt = attempt(wasm, commands.as_bytes(), tight(), dirs.clone()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let lines = lines(&attempt);
        assert_eq!(lines.len(), commands.lines().count(), "{kind}: {lines:?}");
        out.push((kind, lines));
    }
    out
}

#[tokio::test]
async fn attack_grant_a_granted_file_can_be_read_and_listed() {
    let tree = tree();
    for (kind, lines) in probe_granted(
        "read /data/hello.txt\nread /data/sub/inner.txt\nread /data/inside_link\nlist /data\n",
        tree.grant(),
    )
    .await
    {
        assert_eq!(
            lines,
            [
                format!("read /data/hello.txt -> ok: 19 bytes: {HELLO:?}"),
                "read /data/sub/inner.txt -> ok: 5 bytes: \"inner\"".to_owned(),
                format!("read /data/inside_link -> ok: 19 bytes: {HELLO:?}"),
                "list /data -> ok: 7 entries".to_owned(),
            ],
            "{kind}"
        );
    }
    // The same through raw preview 1 calls: fd 3 is the grant.
    let attempt = attempt(
        &path_opener(&[3], &["hello.txt"]),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        lines(&attempt),
        ["open 3 hello.txt errno=0", &format!("read: {HELLO}")]
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_dotdot_cannot_leave_the_grant() {
    let tree = tree();
    let escapes = [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "..",
        "sub/../..",
    ];
    let attempt = attempt(&path_opener(&[3], &escapes), b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    assert_eq!(report.len(), escapes.len(), "{report:?}");
    for line in &report {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    for (kind, lines) in probe_granted(
        "read /data/../outside/secret.txt\nread /data/sub/../../outside/secret.txt\nlist /data/..\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
            assert!(!line.contains("TOP SECRET"), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_absolute_paths_do_not_resolve_against_the_host() {
    let tree = tree();
    let secret = tree.secret.to_str().unwrap().to_owned();
    let absolute = ["/etc/passwd", secret.as_str(), "/data/hello.txt", "/"];
    let attempt = attempt(&path_opener(&[3], &absolute), b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    for line in lines(&attempt) {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    for (kind, lines) in probe_granted(
        &format!("read /etc/passwd\nread {secret}\nlist /\n"),
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_symlinks_out_of_the_grant_cannot_be_followed() {
    let tree = tree();
    let links = [
        "escape_abs",
        "escape_rel",
        "escape_dir/secret.txt",
        "escape_etc",
    ];
    let attempt = attempt(
        &path_opener(&[3], &[&links[..], &["inside_link"]].concat()),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    assert_eq!(
        report.last().map(String::as_str),
        Some(format!("read: {HELLO}").as_str()),
        "control: a link inside the grant is followed: {report:?}"
    );
    for line in &report[..links.len()] {
        assert!(line.ends_with(&format!(" errno={EPERM}")), "{line}");
    }
    assert!(!text(&attempt.output).contains("TOP SECRET"));
    for (kind, lines) in probe_granted(
        "read /data/escape_abs\nread /data/escape_rel\nread /data/escape_dir/secret.txt\nlist /data/escape_dir\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
            assert!(!line.contains("TOP SECRET"), "{kind}: {line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_writes_creates_unlinks_and_renames_fail_and_the_host_is_unchanged() {
    let tree = tree();
    let before = tree.snapshot();
    let attempt = attempt(
        &fabric_agents::fixture("grant_mutations"),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = lines(&attempt);
    let names: Vec<&str> = report
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "create_file",
            "truncate",
            "open_write",
            "create_directory",
            "unlink_file",
            "remove_directory",
            "rename",
            "symlink",
            "link",
            "set_times",
            "open_read",
            "fd_write",
            "fd_pwrite",
            "fd_set_size",
            "fd_set_times",
        ]
    );
    for line in &report {
        if line.starts_with("open_read ") {
            assert_eq!(line, "open_read errno=0", "control: reading is allowed");
        } else {
            assert!(
                !line.ends_with(" errno=0"),
                "succeeded: {line}\n{report:#?}"
            );
        }
    }
    for (kind, lines) in probe_granted(
        "write /data/new.txt\nwrite /data/hello.txt\nwrite /data/sub/inner.txt\n",
        tree.grant(),
    )
    .await
    {
        for line in lines {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    assert_eq!(tree.snapshot(), before, "the granted directory changed");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_of_a_missing_directory_is_invalid_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-dir");
    let attempt = attempt(
        fabric_agents::p1::ECHO,
        b"x",
        tight(),
        vec![DirGrant::read_only(&missing, "/data")],
    )
    .await;
    assert_outcome(&attempt, Outcome::Invalid);
    let error = attempt.error.unwrap();
    assert!(error.contains(missing.to_str().unwrap()), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");
    assert_eq!(attempt.output, b"", "nothing ran");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_of_a_file_or_twice_the_same_name_is_invalid() {
    let tree = tree();
    let file = tree.granted.join("hello.txt");
    let cases = [
        (
            vec![DirGrant::read_only(&file, "/data")],
            format!("directory grant {}: not a directory", file.display()),
        ),
        (
            vec![
                DirGrant::read_only(&tree.granted, "/data"),
                DirGrant::read_only(tree.granted.join("sub"), "/data"),
            ],
            format!(
                "directory grant {}: the guest path \"/data\" is granted twice",
                tree.granted.join("sub").display()
            ),
        ),
        (
            vec![DirGrant::read_only(&tree.granted, "")],
            format!(
                "directory grant {}: the guest path \"\" must be non-empty and free of NUL",
                tree.granted.display()
            ),
        ),
    ];
    for (dirs, expected) in cases {
        for wasm in [fabric_agents::p1::ECHO, fabric_agents::p2::ECHO] {
            let attempt = attempt(wasm, b"x", tight(), dirs.clone()).await;
            assert_outcome(&attempt, Outcome::Invalid);
            assert_eq!(attempt.error.as_deref(), Some(expected.as_str()));
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_grant_open_file_bomb_is_capped_before_the_host_runs_out_of_descriptors() {
    let tree = tree();
    let attempt = attempt(
        &fabric_agents::fixture("open_files_bomb"),
        b"",
        tight(),
        tree.grant(),
    )
    .await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .starts_with("handle limit"),
        "{attempt:?}"
    );
    // A dot per 64 opens: at most 256 files were open at once, not the host's 20,000.
    let dots = text(&attempt.output);
    assert!(
        dots.len() <= 4 && dots.chars().all(|c| c == '.'),
        "{dots:?}"
    );
    assert!(
        dots.len() >= 3,
        "{dots:?}: fewer opens than a program needs"
    );
    assert_serves(sandbox()).await;
}

/// A preview 2 component, in WAT, whose `run` creates `wasi:io/poll.pollable` handles in
/// the host without end (`monotonic-clock.subscribe-duration`) and never drops one.
const POLLABLE_BOMB: &str = r#"(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type $pe (eq $p)))
    (type $own (own $pe))
    (export "subscribe-duration" (func (param "when" u64) (result $own)))))
  (core module $m
    (import "clock" "subscribe-duration" (func $subscribe (param i64) (result i32)))
    (func (export "run") (result i32)
      (loop $forever
        (drop (call $subscribe (i64.const 1000000000)))
        (br $forever))
      unreachable))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))
  (core instance $i (instantiate $m
    (with "clock" (instance (export "subscribe-duration" (func $subscribe))))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run_instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run_instance)))"#;

#[tokio::test]
async fn attack_handles_a_component_cannot_pile_up_host_resources() {
    let wasm = wat::parse_str(POLLABLE_BOMB).unwrap();
    let attempt = run(&wasm, b"").await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .starts_with("handle limit"),
        "{attempt:?}"
    );
    // The loop is a handful of instructions per handle: 256 handles cost little fuel.
    assert!(attempt.usage.fuel_consumed < 1_000_000, "{attempt:?}");
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_net_p1_socket_calls_on_every_fd_fail() {
    let mut wat = Wat::new()
        .import("sock_accept", "(param i32 i32 i32) (result i32)")
        .import("sock_recv", "(param i32 i32 i32 i32 i32 i32) (result i32)")
        .import("sock_send", "(param i32 i32 i32 i32 i32) (result i32)")
        .import("sock_shutdown", "(param i32 i32) (result i32)");
    let (fd, accept, recv, send, shutdown) = (
        wat.text("fd "),
        wat.text(" accept="),
        wat.text(" recv="),
        wat.text(" send="),
        wat.text(" shutdown="),
    );
    let wasm = wat.build(
        "(local $fd i32)",
        &format!(
            r#"
    (i32.store (i32.const 0x10000) (i32.const 0x10100))
    (i32.store (i32.const 0x10004) (i32.const 64))
    (loop $each
      (call $puts {fd}) (call $putu (local.get $fd))
      (call $puts {accept})
      (call $putu (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 0x10020)))
      (call $puts {recv})
      (call $putu (call $sock_recv (local.get $fd) (i32.const 0x10000) (i32.const 1)
        (i32.const 0) (i32.const 0x10020) (i32.const 0x10024)))
      (call $puts {send})
      (call $putu (call $sock_send (local.get $fd) (i32.const 0x10000) (i32.const 1)
        (i32.const 0) (i32.const 0x10020)))
      (call $puts {shutdown})
      (call $putu (call $sock_shutdown (local.get $fd) (i32.const 3)))
      (call $nl)
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $each (i32.le_u (local.get $fd) (i32.const 64))))"#
        ),
    );
    let tree = tree();
    // With a grant, fd 3 exists and is a directory: still no socket.
    let attempt = attempt(&wasm, b"", tight(), tree.grant()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let expected: Vec<String> = (0..=64)
        .map(|fd| {
            let e = if fd <= 3 { ENOTSOCK } else { EBADF };
            format!("fd {fd} accept={e} recv={e} send={e} shutdown={e}")
        })
        .collect();
    assert_eq!(lines(&attempt), expected);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_tcp_connect_to_a_loopback_listener_never_arrives() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let commands = format!(
        "tcp 127.0.0.1:{port}\ntcp localhost:{port}\ntcp [::ffff:127.0.0.1]:{port}\ntcp 0.0.0.0:{port}\n"
    );
    for (kind, wasm) in [
        ("p2", fabric_agents::attack::NETCHECK_P2),
        ("p1", fabric_agents::attack::NETCHECK_P1),
    ] {
        let attempt = run(wasm, commands.as_bytes()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let report = lines(&attempt);
        assert_eq!(report.len(), 4, "{kind}: {report:?}");
        for line in &report {
            assert!(line.contains(" -> err: "), "{kind}: {line}");
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_udp_send_to_a_loopback_socket_never_arrives() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let addr = receiver.local_addr().unwrap();
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
    ] {
        let attempt = run(wasm, format!("udp {addr}\n").as_bytes()).await;
        assert_outcome(&attempt, Outcome::Ok);
        let line = text(&attempt.output);
        assert!(line.starts_with(&format!("udp {addr} -> err: ")), "{line}");
    }
    let mut buf = [0u8; 64];
    match receiver.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a datagram arrived: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_a_guest_cannot_listen() {
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
    ] {
        let attempt = run(wasm, b"listen 127.0.0.1:0\nlisten 0.0.0.0:0\n").await;
        assert_outcome(&attempt, Outcome::Ok);
        for line in lines(&attempt) {
            assert!(line.contains(" -> err: "), "{line}");
        }
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_net_name_lookup_is_refused() {
    for wasm in [
        fabric_agents::attack::NETCHECK_P2,
        fabric_agents::attack::NETCHECK_P1,
        fabric_agents::p2::PROBE,
    ] {
        let input: &[u8] = if wasm == fabric_agents::p2::PROBE {
            b"resolve localhost\nresolve example.com\n"
        } else {
            b"lookup localhost\nlookup example.com\n"
        };
        let attempt = run(wasm, input).await;
        assert_outcome(&attempt, Outcome::Ok);
        let report = lines(&attempt);
        assert_eq!(report.len(), 2, "{report:?}");
        for line in report {
            assert!(line.contains(" -> err: "), "{line}");
        }
    }
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Environment and process
// ---------------------------------------------------------------------------------------

/// A variable set in this test process, with a name and a value no other process has.
fn host_only_variable() -> (String, String) {
    static VARIABLE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    VARIABLE
        .get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let name = format!("FABRIC_ATTACK_SECRET_{}_{nanos}", std::process::id());
            let value = format!("host-only-value-{nanos}");
            // SAFETY: no code in this test binary reads the environment through libc
            // while tests run (Rust's own `std::env` serializes its reads and writes);
            // the variable is set once and never removed.
            #[allow(unsafe_code)]
            unsafe {
                std::env::set_var(&name, &value);
            }
            (name, value)
        })
        .clone()
}

#[tokio::test]
async fn attack_env_host_variables_are_invisible() {
    let (name, value) = host_only_variable();
    assert_eq!(std::env::var(&name).as_deref(), Ok(value.as_str()));
    for wasm in [fabric_agents::p1::PROBE, fabric_agents::p2::PROBE] {
        let attempt = run(wasm, b"env\n").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), "env -> ok: 0 vars\n");
    }
    let mut wat = Wat::new().import("environ_sizes_get", "(param i32 i32) (result i32)");
    let said = wat.text("environ_sizes_get errno=");
    let counts = wat.text(" count/size=");
    let slash = wat.text("/");
    let wasm = wat.build(
        "",
        &format!(
            r#"(call $puts {said})
    (call $putu (call $environ_sizes_get (i32.const 0x10000) (i32.const 0x10004)))
    (call $puts {counts}) (call $putu (i32.load (i32.const 0x10000)))
    (call $puts {slash}) (call $putu (i32.load (i32.const 0x10004))) (call $nl)"#
        ),
    );
    let attempt = run(&wasm, b"").await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        text(&attempt.output),
        "environ_sizes_get errno=0 count/size=0/0\n"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_env_args_are_only_the_program_name() {
    for wasm in [fabric_agents::p1::PROBE, fabric_agents::p2::PROBE] {
        let attempt = run(wasm, b"args\n").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), "args -> ok: 1 args: [\"agent\"]\n");
    }
    let mut wat = Wat::new().import("args_sizes_get", "(param i32 i32) (result i32)");
    let said = wat.text("args_sizes_get errno=");
    let counts = wat.text(" count/size=");
    let slash = wat.text("/");
    let wasm = wat.build(
        "",
        &format!(
            r#"(call $puts {said})
    (call $putu (call $args_sizes_get (i32.const 0x10000) (i32.const 0x10004)))
    (call $puts {counts}) (call $putu (i32.load (i32.const 0x10000)))
    (call $puts {slash}) (call $putu (i32.load (i32.const 0x10004))) (call $nl)"#
        ),
    );
    let attempt = run(&wasm, b"").await;
    assert_outcome(&attempt, Outcome::Ok);
    // One argument, "agent" and its NUL.
    assert_eq!(
        text(&attempt.output),
        "args_sizes_get errno=0 count/size=1/6\n"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_process_proc_raise_signals_nothing() {
    let attempt = run_fixture("proc_raise", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        text(&attempt.output),
        format!("proc_raise errno={ENOTSUP}\n")
    );
    // SIGKILL was asked for: this process would not be here to check.
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_process_exit_codes_are_reported_as_they_were_given() {
    for (code, outcome, reported) in [
        (0u32, Outcome::Ok, 0),
        (1, Outcome::Exit, 1),
        (2, Outcome::Exit, 2),
        (126, Outcome::Exit, 126),
        (255, Outcome::Exit, 255),
        (100_000, Outcome::Exit, 100_000),
        (u32::MAX, Outcome::Exit, -1),
    ] {
        let wasm = Wat::new().import("proc_exit", "(param i32)").build(
            "",
            &format!("(call $proc_exit (i32.const {})) unreachable", code as i32),
        );
        let attempt = run(&wasm, b"").await;
        assert_outcome(&attempt, outcome);
        assert_eq!(
            attempt.exit_code,
            Some(reported),
            "exit({code}): {attempt:?}"
        );
        assert_eq!(attempt.trap, None);
    }
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_module_unknown_import_is_invalid_and_runs_nothing() {
    let attempt = run_fixture("unknown_import", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .contains("launch_missiles"),
        "{attempt:?}"
    );
    assert_eq!(attempt.usage.fuel_consumed, 0);
    let component = wat::parse_str(
        r#"(component
  (import "evil:host/missiles" (instance $m (export "launch" (func))))
  (core func $launch (canon lower (func $m "launch")))
  (core module $c (import "m" "launch" (func)))
  (core instance (instantiate $c (with "m" (instance (export "launch" (func $launch)))))))"#,
    )
    .unwrap();
    let attempt = run(&component, b"").await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(
        attempt
            .error
            .as_deref()
            .unwrap()
            .contains("evil:host/missiles"),
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_wrong_import_signature_is_invalid() {
    let attempt = run_fixture("wrong_signature", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(
        attempt.error.as_deref().unwrap().contains("fd_write"),
        "{attempt:?}"
    );
    assert_eq!(attempt.usage.fuel_consumed, 0);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_invalid_bytes_are_a_load_error() {
    let not_wasm: [&[u8]; 4] = [
        b"",
        b"\x7fELF\x02\x01\x01",
        b"#!/bin/sh\nrm -rf /\n",
        b"\0asm",
    ];
    for bytes in not_wasm {
        assert!(
            matches!(sandbox().load(bytes), Err(LoadError::NotWasm(_))),
            "{bytes:?}"
        );
    }
    let bad_body: [&[u8]; 3] = [
        // A core module header, then a type section whose length runs past the end.
        b"\0asm\x01\0\0\0\x01\x7f\x60",
        // A component header, then garbage.
        b"\0asm\x0d\0\x01\0\xff\xff\xff\xff",
        // A core module header, then an unknown section id.
        b"\0asm\x01\0\0\0\x2a\x01\x00",
    ];
    for bytes in bad_body {
        assert!(
            matches!(sandbox().load(bytes), Err(LoadError::Invalid(_))),
            "{bytes:?}: {:?}",
            sandbox().load(bytes)
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_truncated_bytes_are_a_load_error() {
    for wasm in [fabric_agents::p1::ECHO, fabric_agents::p2::ECHO] {
        for cut in [
            wasm.len() / 3,
            wasm.len() / 2,
            wasm.len() - 100,
            wasm.len() - 1,
        ] {
            match sandbox().load(&wasm[..cut]) {
                Err(LoadError::Invalid(_)) => {}
                other => panic!("cut at {cut} of {}: {other:?}", wasm.len()),
            }
        }
    }
    // Every prefix of a small module: a load error, or, when the cut falls between two
    // sections, a smaller valid module: without `_start` (`invalid`), without its data
    // section (`ok`, printing the empty text it now has) or without its name section.
    let hello = fabric_agents::fixture("hello");
    let mut loaded = 0;
    for cut in 0..hello.len() {
        if let Ok(agent) = sandbox().load(&hello[..cut]) {
            loaded += 1;
            let attempt = sandbox()
                .run(&agent, RunRequest::default(), &CancelToken::new())
                .await;
            match attempt.outcome {
                Outcome::Invalid => assert!(attempt.error.unwrap().contains("_start")),
                // Without its data (empty text), or without only the name section.
                Outcome::Ok => assert!(
                    [&b""[..], b"hello from wat\n"].contains(&attempt.output.as_slice()),
                    "cut at {cut}: {attempt:?}"
                ),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
    assert!(loaded < 10, "{loaded} of {} prefixes loaded", hello.len());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_over_the_size_limit_is_too_large() {
    let max = SandboxConfig::DEFAULT_MAX_MODULE_BYTES;
    assert_eq!(sandbox().config().max_module_bytes, max);
    // A valid module padded with a custom section to one byte over the limit.
    let mut wasm = fabric_agents::fixture("hello");
    let payload = max as usize + 1 - wasm.len() - 1 - 5 - 1 - 1;
    wasm.push(0); // custom section
    let size = (payload + 2) as u32; // name length byte + name "x" + payload
    for i in 0..5 {
        let byte = ((size >> (7 * i)) & 0x7f) as u8;
        wasm.push(if i < 4 { byte | 0x80 } else { byte });
    }
    wasm.extend_from_slice(&[1, b'x']);
    wasm.resize(wasm.len() + payload, 0);
    assert_eq!(wasm.len() as u64, max + 1);
    assert_eq!(
        sandbox().load(&wasm).unwrap_err(),
        LoadError::TooLarge { size: max + 1, max }
    );
    assert_serves(sandbox()).await;
}

/// Loads `wasm` on a thread of its own and gives up after `limit`, so that a hang fails
/// the test instead of stalling the suite. Returns the load result and how long it took.
fn load_bounded(
    wasm: Vec<u8>,
    limit: Duration,
) -> (
    Result<std::sync::Arc<fabric_sandbox::Agent>, LoadError>,
    Duration,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let loaded = sandbox().load(&wasm);
        let _ = tx.send((loaded, started.elapsed()));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("loading took more than {limit:?}"))
}

#[tokio::test]
async fn attack_module_100k_nested_blocks_never_crash_the_host() {
    let depth = 100_000;
    let source = format!(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") {} {}))",
        "block ".repeat(depth),
        "end ".repeat(depth)
    );
    let wasm = wat::parse_str(&source).unwrap();
    let (loaded, took) = load_bounded(wasm, Duration::from_secs(120));
    match loaded {
        Ok(agent) => {
            let attempt = sandbox()
                .run(&agent, RunRequest::default(), &CancelToken::new())
                .await;
            assert_outcome(&attempt, Outcome::Ok);
        }
        Err(LoadError::Invalid(why)) => assert!(why.contains("nest"), "{why}"),
        Err(other) => panic!("{other:?}"),
    }
    eprintln!("100k nested blocks: loaded in {took:?}");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_100k_functions_compile_in_bounded_time() {
    let count = 100_000;
    let mut source = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..count {
        writeln!(source, "(func $f{i} (result i32) (i32.const {i}))").unwrap();
    }
    source.push_str(&format!(
        "(func (export \"_start\") (drop (call $f{})))\n)",
        count - 1
    ));
    let wasm = wat::parse_str(&source).unwrap();
    let (loaded, took) = load_bounded(wasm, Duration::from_secs(120));
    let agent = loaded.expect("100k small functions are a valid module");
    eprintln!("100k functions: compiled in {took:?}");
    assert!(took < Duration::from_secs(60), "compiling took {took:?}");
    let attempt = sandbox()
        .run(&agent, RunRequest::default(), &CancelToken::new())
        .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_serves(sandbox()).await;
}

/// A hostile module whose compilation would hold a core for minutes is refused by the
/// scan before compilation, in well under a second, naming the limit.
async fn refused_before_compiling(source: String, expect: &str) {
    let wasm = wat::parse_str(&source).unwrap();
    let (loaded, took) = load_bounded(wasm, Duration::from_secs(60));
    match loaded {
        Err(LoadError::Invalid(why)) => {
            assert!(
                why.contains("too complex to compile") && why.contains(expect),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(5), "refusing took {took:?}");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_100k_values_live_across_a_call_is_refused_before_compiling() {
    // Compiled, this takes Cranelift more than two minutes (threat model, finding 3).
    let n = 100_000;
    let source = format!(
        "(module (memory (export \"memory\") 1) (func $f)
           (func (export \"_start\") {} (call $f) {}))",
        "(v128.const i64x2 1 2) ".repeat(n),
        "(drop) ".repeat(n)
    );
    refused_before_compiling(source, "values on its operand stack").await;
}

#[tokio::test]
async fn attack_module_50k_nested_loops_is_refused_before_compiling() {
    let n = 50_000;
    let source = format!(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") {} {}))",
        "loop ".repeat(n),
        "end ".repeat(n)
    );
    refused_before_compiling(source, "nested").await;
}

#[tokio::test]
async fn attack_module_50k_locals_is_refused_before_compiling() {
    let source = format!(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (local {})))",
        "i64 ".repeat(50_000)
    );
    refused_before_compiling(source, "locals").await;
}

#[tokio::test]
async fn attack_module_trap_in_the_start_function_is_a_trap() {
    let attempt = run_fixture("start_trap", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("unreachable"));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_module_shared_memory_cannot_park_a_worker_thread() {
    let (loaded, _) = load_bounded(
        fabric_agents::fixture("shared_memory_wait"),
        Duration::from_secs(30),
    );
    match loaded {
        Err(LoadError::Invalid(why)) => assert!(why.contains("threads"), "{why}"),
        other => panic!("a shared memory loaded: {other:?}"),
    }
    assert_serves(sandbox()).await;
}

// ---------------------------------------------------------------------------------------
// Between attempts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attack_state_globals_and_memory_start_fresh_every_attempt() {
    let wasm = fabric_agents::fixture("state_leak");
    for _ in 0..5 {
        let attempt = run(&wasm, b"").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), "global=0 memory=0\n");
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_state_one_attempts_input_never_reaches_the_next_attempts_memory() {
    let wasm = fabric_agents::fixture("memory_dump");
    let agent = load(&wasm);
    for round in 0..20 {
        let secret = format!("tenant {round} secret: {}", "s".repeat(200));
        let request = RunRequest {
            input: secret.clone().into_bytes(),
            limits: tight(),
            ..RunRequest::default()
        };
        let attempt = sandbox().run(&agent, request, &CancelToken::new()).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(attempt.output.len(), 512, "{attempt:?}");
        assert!(
            attempt.output.iter().all(|b| *b == 0),
            "round {round} saw an earlier attempt's memory: {:?}",
            text(&attempt.output)
        );
    }
    assert_serves(sandbox()).await;
}
