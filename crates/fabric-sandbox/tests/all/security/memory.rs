//! Memory: linear memories, tables, data segments and stacks stay within their limits.

use fabric_sandbox::{CancelToken, LoadError, Pooling, RunRequest, Sandbox, SandboxConfig};
use fabric_types::{Limits, Outcome};

use super::Wat;
use crate::util::*;

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
