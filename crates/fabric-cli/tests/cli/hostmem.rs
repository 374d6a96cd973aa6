//! Host memory per attempt: 64 guests at once that each ask the host for the largest
//! buffers it will take keep the server's resident memory far below 64 times their
//! memory limit.

use std::time::Duration;

use serde_json::json;

use crate::server::Fabric;

const ATTACKERS: usize = 64;
/// Each attacker's memory limit.
const MEMORY: u64 = 64 << 20;
/// What each attacker asks to read into the host in one call: 60 MiB.
const BIG: u32 = 60 << 20;
const BUF_AT: u32 = 0x10000;

/// A preview 1 module that opens `/data/big.bin` and, until its timeout, reads it from
/// its start with `fd_read` into one buffer of 60 MiB, then of 4 MiB (the per-call bound
/// for its limits). wasmtime-wasi allocates a host buffer the size of the read and fills
/// it on a blocking thread while the attempt waits, so without a bound every attacker
/// held a 60 MiB host buffer at once.
fn attacker() -> Vec<u8> {
    let pages = (BUF_AT + BIG) / 0x10000;
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek"
    (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 64) "big.bin")
  (func $read (param $len i32)
    (i32.store (i32.const 0) (i32.const {BUF_AT}))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_seek (i32.load (i32.const 32)) (i64.const 0) (i32.const 0)
      (i32.const 24)))
    (drop (call $fd_read (i32.load (i32.const 32)) (i32.const 0) (i32.const 1)
      (i32.const 16))))
  (func (export "_start")
    (if (call $path_open (i32.const 3) (i32.const 1) (i32.const 64) (i32.const 7)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))
      (then unreachable))
    (loop $again
      (call $read (i32.const {BIG}))
      (call $read (i32.const {small}))
      (br $again))))"#,
        small = 4 << 20
    ))
    .expect("the attacker's WAT")
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib << 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_hostmem_64_concurrent_readers_of_huge_buffers_keep_the_server_rss_bounded() {
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("big.bin"), vec![7u8; 64 << 20]).unwrap();
    let spec = format!("data={}", volume.path().display());
    let workers = ATTACKERS.to_string();
    let fabric = Fabric::start(&["--workers", &workers, "--volume", &spec]);
    let client = fabric.client();

    // Warm up: one ordinary task, so what the server holds from now on is the attack's.
    let echo = client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = client
        .submit(json!({"module": echo, "input": "warm"}))
        .await;
    let warm = client.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(warm["state"], "succeeded", "{warm}");
    let module = client.put_module(&attacker(), "reader").await;
    let (before, _) = memory_of(fabric.pid());

    let spec = json!({
        "module": module,
        "dirs": {"/data": "data"},
        "limits": {"memory_bytes": MEMORY, "timeout_ms": 3000},
        "retry": {"max_attempts": 1},
    });
    let tasks = client
        .call("task.submit_batch", json!({"tasks": vec![spec; ATTACKERS]}))
        .await;
    let ids: Vec<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let task = client.wait(id, Duration::from_secs(120)).await;
        assert_eq!(task["state"], "failed", "{task}");
        assert_eq!(task["attempts"][0]["outcome"], "timeout", "{task}");
    }
    let (_, peak) = memory_of(fabric.pid());
    let growth = peak.saturating_sub(before);
    // 64 × 4 MiB of host buffers and 64 × 4 MiB of touched guest memory at most; without
    // the per-call bound each attacker held 60 MiB of host buffer beside 60 MiB of guest
    // memory (about 7.5 GiB for 64).
    let bound = ATTACKERS as u64 * MEMORY / 4;
    eprintln!(
        "server RSS before {} MiB, peak {} MiB, growth {} MiB (bound {} MiB)",
        before >> 20,
        peak >> 20,
        growth >> 20,
        bound >> 20
    );
    assert!(
        growth < bound,
        "the server's peak RSS grew by {} MiB under {ATTACKERS} attackers (bound {} MiB)",
        growth >> 20,
        bound >> 20
    );
    assert_eq!(client.get("/healthz").await.0, 200);
    let id = client
        .submit(json!({"module": echo, "input": "after"}))
        .await;
    let after = client.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(after["state"], "succeeded", "{after}");
}
