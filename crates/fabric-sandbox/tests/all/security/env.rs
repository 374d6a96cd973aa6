//! Environment and process: no host variable or argument leaks in, signals do nothing, exit
//! codes are reported as given.

use fabric_types::Outcome;

use super::{ENOTSUP, Wat};
use crate::util::*;

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
