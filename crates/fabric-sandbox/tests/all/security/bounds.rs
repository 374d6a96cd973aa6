//! Memory bounds: a guest reads and writes nothing outside its memories, whether each
//! memory reserves 4 GiB and a guard (accesses past the memory fault on unmapped pages) or,
//! under a smaller `max_memory_bytes`, only that much (the compiled code checks bounds,
//! and the next slot of the pool starts 64 KiB past the reservation).

use fabric_sandbox::{CancelToken, LoadError, Pooling, RunRequest, Sandbox, SandboxConfig};
use fabric_types::{Attempt, Limits, Outcome};

use crate::util::*;

/// `max_memory_bytes` of the small-slot sandboxes: each memory reserves 8 MiB + 64 KiB.
const SMALL: u64 = 8 << 20;
/// Bytes of a Wasm page.
const PAGE: u64 = 64 << 10;
/// Where the pool's next memory slot starts after a small slot's memory.
const NEXT_SLOT: u64 = SMALL + PAGE;

/// A sandbox whose memories reserve [`SMALL`] bytes (plus guard), pooled or on demand.
fn small_slots(pooling: Pooling) -> Sandbox {
    let sandbox = Sandbox::new(SandboxConfig {
        slots: 4,
        max_memory_bytes: SMALL,
        pooling,
        epoch_tick: TICK,
        ..SandboxConfig::default()
    })
    .unwrap();
    assert_eq!(sandbox.is_pooling(), pooling == Pooling::Required);
    sandbox
}

/// Both small-slot sandboxes, named. (The shared sandbox reserves 4 GiB per memory.)
fn every_sandbox() -> Vec<(&'static str, Sandbox)> {
    vec![
        ("pooled, small slots", small_slots(Pooling::Required)),
        ("on demand, small reservation", small_slots(Pooling::Off)),
    ]
}

/// Limits with [`SMALL`] bytes of memory, all a small slot allows.
fn small_limits() -> Limits {
    Limits {
        memory_bytes: SMALL,
        ..tight()
    }
}

async fn attempt(sandbox: &Sandbox, wasm: &[u8], limits: Limits) -> Attempt {
    let agent = sandbox.load(wasm).expect("the module loads");
    let request = RunRequest {
        limits,
        ..RunRequest::default()
    };
    sandbox.run(&agent, request, &CancelToken::new()).await
}

/// One access a guest makes, and whether it is within its memory.
struct Probe {
    what: &'static str,
    /// 1: the memory `$m0` alone; 2: `$m0` and `$m1`, one page each to begin with.
    memories: u32,
    /// Pages `$m0` grows by first.
    grow: u64,
    address: u64,
    access: String,
    in_bounds: bool,
}

impl Probe {
    /// The command that makes the access. The address is read from a mutable global, so
    /// that the compiler cannot fold the check away.
    fn wasm(&self) -> Vec<u8> {
        let second = if self.memories == 2 {
            "(memory $m1 1)"
        } else {
            ""
        };
        wat::parse_str(format!(
            r#"(module
  (memory $m0 1) {second}
  (global $at (mut i32) (i32.const {address}))
  (global $sink (mut i64) (i64.const 0))
  (func (export "_start")
    (if (i32.eq (memory.grow $m0 (i32.const {grow})) (i32.const -1)) (then unreachable))
    {access}))"#,
            address = self.address as u32 as i32,
            grow = self.grow,
            access = self.access,
        ))
        .unwrap()
    }
}

fn load32(memory: &str, offset: u64) -> String {
    format!(
        "(global.set $sink (i64.extend_i32_u (i32.load {memory} offset={offset} (global.get $at))))"
    )
}

fn store64(offset: u64) -> String {
    format!("(i64.store offset={offset} (global.get $at) (i64.const -1))")
}

fn load128() -> String {
    "(global.set $sink (i64x2.extract_lane 0 (v128.load (global.get $at))))".into()
}

fn fill(len: u64) -> String {
    format!("(memory.fill (global.get $at) (i32.const 255) (i32.const {len}))")
}

fn probes() -> Vec<Probe> {
    let probe = |what, memories, grow, address, access, in_bounds| Probe {
        what,
        memories,
        grow,
        address,
        access,
        in_bounds,
    };
    let m0 = |offset| load32("$m0", offset);
    let m1 = |offset| load32("$m1", offset);
    // Pages that grow `$m0` alone to all of [`SMALL`].
    let full = SMALL / PAGE - 1;
    vec![
        probe("last word", 2, 0, PAGE - 4, m0(0), true),
        probe("at the memory's size", 2, 0, PAGE, m0(0), false),
        probe("straddling the end", 2, 0, PAGE - 3, m0(0), false),
        probe("last 8 bytes, stored", 2, 0, PAGE - 8, store64(0), true),
        probe("straddling store", 2, 0, PAGE - 7, store64(0), false),
        probe("at the reservation", 2, 0, SMALL, m0(0), false),
        // In a fresh pool `$m0` and `$m1` take slots 0 and 1: this is `$m1`'s first
        // byte, mapped and writable; only the bounds check stops the access.
        probe("the next slot", 2, 0, NEXT_SLOT, m0(0), false),
        probe("the next slot, stored", 2, 0, NEXT_SLOT, store64(0), false),
        probe("the next slot by offset", 2, 0, 0, m0(NEXT_SLOT), false),
        probe("top of 32 bits", 2, 0, 0xFFFF_FFFC, m0(0), false),
        probe("33-bit address", 2, 0, 0xFFFF_FFFF, m0(0xFFFF_FFFF), false),
        probe("33-bit store", 2, 0, 0xFFFF_FFF8, store64(8), false),
        probe("second memory, last word", 2, 0, PAGE - 4, m1(0), true),
        probe("second memory, at its size", 2, 0, PAGE, m1(0), false),
        probe("second memory, next slot", 2, 0, NEXT_SLOT, m1(0), false),
        probe("full memory, last word", 1, full, SMALL - 4, m0(0), true),
        probe("full memory, at its size", 1, full, SMALL, m0(0), false),
        probe("full memory, straddling", 1, full, SMALL - 2, m0(0), false),
        probe(
            "full memory, last 16 bytes",
            1,
            full,
            SMALL - 16,
            load128(),
            true,
        ),
        probe(
            "full memory, v128 straddling",
            1,
            full,
            SMALL - 8,
            load128(),
            false,
        ),
        probe("full memory, store past", 1, full, SMALL, store64(0), false),
        probe("fill to the end", 1, full, SMALL - 16, fill(16), true),
        probe("fill past the end", 1, full, SMALL - 16, fill(17), false),
    ]
}

#[tokio::test]
async fn attack_memory_loads_and_stores_past_the_memory_trap_whatever_it_reserves() {
    let on_demand = small_slots(Pooling::Off);
    let mut pooled = None;
    for probe in probes() {
        // A fresh pool for each probe, so that its memories take the first slots (the
        // sandbox's unit tests check that they are then one slot apart).
        let fresh = pooled.insert(small_slots(Pooling::Required));
        for (name, sandbox) in [
            ("pooled, small slots", &*fresh),
            ("on demand, small reservation", &on_demand),
            ("shared, 4 GiB", crate::util::sandbox()),
        ] {
            let got = attempt(sandbox, &probe.wasm(), small_limits()).await;
            let what = probe.what;
            if probe.in_bounds {
                assert_eq!(got.outcome, Outcome::Ok, "{name}: {what}: {got:?}");
            } else {
                assert_eq!(
                    (got.outcome, got.trap.as_deref()),
                    (Outcome::Trap, Some("memory_out_of_bounds")),
                    "{name}: {what}: {got:?}"
                );
            }
        }
    }
    assert_serves(pooled.as_ref().unwrap()).await;
    assert_serves(&on_demand).await;
}

#[tokio::test]
async fn attack_memory_growth_past_max_memory_bytes_hits_the_memory_limit() {
    // Grows by `pages` pages at once; a memory declared with or without a maximum.
    let grow = |memory: &str, pages: u64| {
        wat::parse_str(format!(
            r#"(module (memory {memory})
  (func (export "_start") (drop (memory.grow (i32.const {pages})))))"#
        ))
        .unwrap()
    };
    let all = SMALL / PAGE;
    for (name, sandbox) in every_sandbox() {
        for memory in ["1", "1 65536"] {
            // To all of it, then one page more.
            let fits = attempt(&sandbox, &grow(memory, all - 1), small_limits()).await;
            assert_outcome(&fits, Outcome::Ok);
            assert_eq!(fits.usage.peak_memory_bytes, SMALL, "{name}");
            for pages in [all, 65_535] {
                let over = attempt(&sandbox, &grow(memory, pages), small_limits()).await;
                assert_outcome(&over, Outcome::MemoryLimit);
                assert_eq!(over.usage.peak_memory_bytes, PAGE, "{name}: {over:?}");
                let error = over.error.as_deref().unwrap();
                assert!(error.starts_with("memory limit"), "{name}: {error}");
            }
        }
        // Under a lower per-attempt limit, that limit holds.
        let half = Limits {
            memory_bytes: SMALL / 2,
            ..tight()
        };
        let over = attempt(&sandbox, &grow("1", all / 2), half).await;
        assert_outcome(&over, Outcome::MemoryLimit);
        assert_serves(&sandbox).await;
    }
}

#[tokio::test]
async fn a_task_may_use_all_of_max_memory_bytes_on_small_slots() {
    // Grows to all of it (or declares it), fills it, writes its last word and exits with
    // the last byte: 0x44 when every write landed.
    let whole = |initial: u64, grow: u64| {
        wat::parse_str(format!(
            r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory {initial})
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const {grow})) (i32.const -1)) (then unreachable))
    (memory.fill (i32.const 0) (i32.const 171) (i32.const {SMALL}))
    (i32.store (i32.const {last}) (i32.const 0x44332211))
    (call $exit (i32.add (i32.load8_u (i32.const {end}))
                         (i32.sub (i32.load8_u (i32.const 0)) (i32.const 171))))))"#,
            last = SMALL - 4,
            end = SMALL - 1,
        ))
        .unwrap()
    };
    let all = SMALL / PAGE;
    for (name, sandbox) in every_sandbox() {
        for wasm in [whole(1, all - 1), whole(all, 0)] {
            let got = attempt(&sandbox, &wasm, small_limits()).await;
            assert_outcome(&got, Outcome::Exit);
            assert_eq!(got.exit_code, Some(0x44), "{name}");
            assert_eq!(got.usage.peak_memory_bytes, SMALL, "{name}");
        }
        assert_serves(&sandbox).await;
    }
}

#[tokio::test]
async fn attack_memory_declared_larger_than_the_slot_loads_and_ends_memory_limit() {
    // One page more than a slot holds, in a second memory: Wasmtime's pool would refuse
    // to load it; it loads, and ends as the limiter ends it on the 4 GiB sandbox.
    let wasm = wat::parse_str(format!(
        r#"(module (memory 1) (memory {}) (func (export "_start")))"#,
        SMALL / PAGE + 1
    ))
    .unwrap();
    let mut errors = Vec::new();
    for (name, sandbox) in every_sandbox()
        .into_iter()
        .map(|(name, sandbox)| (name, Some(sandbox)))
        .chain([("shared, 4 GiB", None)])
    {
        let sandbox = sandbox.as_ref().unwrap_or_else(|| crate::util::sandbox());
        let got = attempt(sandbox, &wasm, small_limits()).await;
        assert_outcome(&got, Outcome::MemoryLimit);
        // The first memory was taken, the second refused.
        assert_eq!(got.usage.peak_memory_bytes, PAGE, "{name}: {got:?}");
        errors.push(got.error.unwrap());
    }
    assert_eq!(
        errors[0],
        format!(
            "memory limit: the instance asked for {} bytes in all, over its limit of {SMALL} bytes",
            PAGE + SMALL + PAGE
        )
    );
    assert!(errors.iter().all(|error| *error == errors[0]), "{errors:?}");

    // Invalid Wasm declaring as much is still refused at load.
    let invalid = wat::parse_str(format!(
        r#"(module (memory {}) (func (export "_start") (drop (i32.add))))"#,
        SMALL / PAGE + 1
    ))
    .unwrap();
    let pooled = small_slots(Pooling::Required);
    assert!(
        matches!(pooled.load(&invalid), Err(LoadError::Invalid(_))),
        "invalid Wasm loaded"
    );
    assert_serves(&pooled).await;
}
