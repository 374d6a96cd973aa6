//! Modules: invalid, oversized and hostile modules are refused at load, in bounded time.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use fabric_sandbox::{CancelToken, LoadError, RunRequest, SandboxConfig};
use fabric_types::Outcome;

use crate::util::*;

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

#[tokio::test]
async fn attack_module_types_open_to_subtyping_are_refused_before_they_can_abort_the_host() {
    // GHSA-rc4p-x33f-vpr2: in Wasmtime 48.0.8 without its `gc` feature, `call_indirect`
    // through a non-final type reaches a check that panics where it cannot unwind, and the
    // whole process aborts (`fabric run` of this module did, exit 134).
    for (what, source) in [
        (
            "a subtype called through its supertype",
            r#"(module
  (type $t (sub (func)))
  (type $u (sub $t (func)))
  (table 1 funcref)
  (elem (i32.const 0) func $f)
  (func $f (type $u))
  (func (export "_start") (call_indirect (type $t) (i32.const 0))))"#,
        ),
        (
            "a function of another type called through a non-final type",
            r#"(module
  (type $t (sub (func)))
  (type $v (sub (func (param i32))))
  (table 1 funcref)
  (elem (i32.const 0) func $f)
  (func $f (type $v))
  (func (export "_start") (call_indirect (type $t) (i32.const 0))))"#,
        ),
    ] {
        let wasm = wat::parse_str(source).unwrap();
        match sandbox().load(&wasm) {
            Err(LoadError::Invalid(why)) => {
                assert!(why.contains("open to subtyping"), "{what}: {why}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_serves(sandbox()).await;
}
