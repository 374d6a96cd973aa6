//! Host calls: large requests are cut into slices so the deadline holds inside them, and
//! what one call may make the host copy or allocate is bounded whatever the guest asks.

use std::time::Duration;

use fabric_sandbox::{MIN_HOSTCALL_BYTES, RANDOM_SLICE};

use super::*;
use crate::util::*;

/// 60 MiB: the largest request the modules below make, at `BIG_AT`.
const BIG: u32 = 60 << 20;
const BIG_AT: u32 = 0x20000;
const EFAULT: u32 = 21;
const ENOMEM: u32 = 48;

/// Room for `BIG` bytes at `BIG_AT`, within a 64 MiB memory limit.
fn big_module() -> Wat {
    let mut wat = Wat::new().import("random_get", "(param i32 i32) (result i32)");
    wat.pages = (BIG_AT + BIG) / 0x10000;
    wat
}

fn big_limits(timeout_ms: u64) -> Limits {
    Limits {
        timeout_ms,
        memory_bytes: 64 << 20,
        ..tight()
    }
}

/// `fd_write` of `len` bytes at `BIG_AT` to `fd`; leaves the errno on the stack.
fn write_big(fd: u32, len: u32) -> String {
    format!(
        "(i32.store (i32.const 0x10000) (i32.const {BIG_AT}))
         (i32.store (i32.const 0x10004) (i32.const {len}))
         (call $fd_write (i32.const {fd}) (i32.const 0x10000) (i32.const 1) (i32.const 0x10010))"
    )
}

#[tokio::test]
async fn attack_hostcall_random_get_of_60_mib_in_a_loop_ends_within_100_ms_of_its_timeout() {
    let wasm = big_module().build(
        "",
        &format!(
            "(loop $again
               (drop (call $random_get (i32.const {BIG_AT}) (i32.const {BIG})))
               (br $again))"
        ),
    );
    let attempt = attempt(&wasm, b"", big_limits(100), Vec::new()).await;
    assert_timed_out_within(&attempt, 100, Duration::from_millis(100));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn random_get_fills_exactly_the_buffer_with_random_bytes_across_slices() {
    let len = 3 * RANDOM_SLICE as u32 + 1234;
    // Asks for `len` bytes, then prints them and the 16 bytes after them.
    let wasm = big_module().build(
        "",
        &format!(
            "(drop (call $random_get (i32.const {BIG_AT}) (i32.const {len})))
             (call $puts (i32.const {BIG_AT}) (i32.const {}))",
            len + 16
        ),
    );
    let first = attempt(&wasm, b"", big_limits(2_000), Vec::new()).await;
    let second = attempt(&wasm, b"", big_limits(2_000), Vec::new()).await;
    for run in [&first, &second] {
        assert_outcome(run, Outcome::Ok);
        assert_eq!(run.output.len(), len as usize + 16);
        let (random, after) = run.output.split_at(len as usize);
        assert_eq!(after, [0; 16], "random_get wrote past its buffer");
        // Each slice got its own bytes: about 1 in 256 is zero, never a whole slice.
        for slice in random.chunks(RANDOM_SLICE) {
            let zeros = slice.iter().filter(|&&b| b == 0).count();
            assert!(zeros < slice.len() / 64, "{zeros} zeros in a slice");
        }
    }
    assert_ne!(
        first.output, second.output,
        "two attempts got the same bytes"
    );
}

#[tokio::test]
async fn attack_hostcall_random_get_outside_memory_is_efault_and_the_attempt_goes_on() {
    let wasm = Wat::new()
        .import("random_get", "(param i32 i32) (result i32)")
        .build(
            "",
            "(call $putu (call $random_get (i32.const 0x1fff0) (i32.const 32))) (call $nl)
             (call $putu (call $random_get (i32.const 16) (i32.const -1))) (call $nl)
             (call $putu (call $random_get (i32.const 0x1fff0) (i32.const 16)))",
        );
    let attempt = attempt(&wasm, b"", tight(), Vec::new()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        lines(&attempt),
        [EFAULT, EFAULT, ESUCCESS].map(|e| e.to_string())
    );
}

#[tokio::test]
async fn attack_hostcall_fd_write_over_the_per_call_bound_is_enomem_and_the_attempt_goes_on() {
    // The bound is the larger of 4 MiB and the attempt's output and log limits (1 MiB and
    // 64 KiB here): a write of the bound is taken (and truncated to the log limit), one of
    // 60 MiB is refused before the host copies anything.
    let wasm = big_module().build(
        "(local $a i32) (local $b i32)",
        &format!(
            "(local.set $a {}) (local.set $b {})
             (call $putu (local.get $a)) (call $nl) (call $putu (local.get $b))",
            write_big(2, MIN_HOSTCALL_BYTES as u32),
            write_big(2, BIG)
        ),
    );
    let attempt = attempt(&wasm, b"", big_limits(2_000), Vec::new()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(lines(&attempt), [ESUCCESS, ENOMEM].map(|e| e.to_string()));
    assert!(attempt.stderr_truncated);
    assert_eq!(attempt.stderr.len() as u64, tight().log_bytes);
}

#[tokio::test]
async fn a_guest_may_write_its_whole_output_limit_in_one_call() {
    let limits = Limits {
        output_bytes: 16 << 20,
        ..big_limits(2_000)
    };
    let wasm = big_module().build("", &format!("(drop {})", write_big(1, 16 << 20)));
    let attempt = attempt(&wasm, b"", limits, Vec::new()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output.len(), 16 << 20);
    assert!(!attempt.output_truncated);
}

#[tokio::test]
async fn attack_hostcall_largest_fd_writes_in_a_loop_end_within_100_ms_of_the_timeout() {
    let wasm = big_module().build(
        "",
        &format!(
            "(loop $again (drop {}) (drop {}) (br $again))",
            write_big(1, MIN_HOSTCALL_BYTES as u32),
            write_big(2, BIG)
        ),
    );
    let attempt = attempt(&wasm, b"", big_limits(100), Vec::new()).await;
    assert_timed_out_within(&attempt, 100, Duration::from_millis(100));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_hostcall_fd_read_of_a_granted_file_is_bounded_per_call() {
    // A granted 8 MiB file: reading it in one call of 60 MiB would make the host allocate
    // and fill 8 MiB (up to the guest's whole memory with a larger file); the call is
    // refused, and reads of the bound are taken.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let mut wat = big_module()
        .import("fd_read", "(param i32 i32 i32 i32) (result i32)")
        .import(
            "path_open",
            "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
        );
    let name = wat.text("big.bin");
    let read = |len: u32| {
        format!(
            "(i32.store (i32.const 0x10000) (i32.const {BIG_AT}))
             (i32.store (i32.const 0x10004) (i32.const {len}))
             (call $putu (call $fd_read (i32.load (i32.const 0x10030)) (i32.const 0x10000)
               (i32.const 1) (i32.const 0x10010)))
             (call $nl)
             (call $putu (i32.load (i32.const 0x10010))) (call $nl)"
        )
    };
    let wasm = wat.build(
        "",
        &format!(
            "(call $putu (call $path_open (i32.const 3) (i32.const 1) {name} (i32.const 0)
               (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0x10030)))
             (call $nl)
             (i32.store (i32.const 0x10010) (i32.const 0))
             {} {}",
            read(BIG),
            read(MIN_HOSTCALL_BYTES as u32)
        ),
    );
    let grant = vec![DirGrant::read_only(dir.path(), "/data")];
    let attempt = attempt(&wasm, b"", big_limits(2_000), grant).await;
    assert_outcome(&attempt, Outcome::Ok);
    let expected = [ESUCCESS, ENOMEM, 0, ESUCCESS, MIN_HOSTCALL_BYTES as u32];
    assert_eq!(lines(&attempt), expected.map(|n| n.to_string()));
    assert_serves(sandbox()).await;
}
