//! Files without a grant: no descriptor but stdio, no path opens, and a component cannot
//! pile up host handles.

use fabric_types::Outcome;

use super::{EBADF, ESUCCESS, Wat, lines, path_opener};
use crate::util::*;

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
