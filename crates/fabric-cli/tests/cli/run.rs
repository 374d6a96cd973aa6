//! `fabric run`: outcomes, exit status, JSON shape, errors, and hostile guests run from the
//! command line as a user would.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn echo_runs_and_exits_zero() {
    let dir = Workdir::new();
    let echo = dir.file("echo.wasm", fabric_agents::p1::ECHO);
    let out = fabric(&["run", echo.to_str().unwrap(), "--input", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello");
    assert!(stderr(&out).contains("fabric: ok"), "{}", stderr(&out));
}

#[test]
fn json_prints_exactly_the_attempt() {
    let dir = Workdir::new();
    let echo = dir.file("echo.wasm", fabric_agents::p2::ECHO);
    let out = fabric(&["run", echo.to_str().unwrap(), "--input", "hi", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let attempt = attempt_json(&out);
    assert_eq!(attempt["outcome"], "ok");
    assert_eq!(attempt["output"], "hi");
    assert_eq!(attempt["exit_code"], 0);
    for key in ["fuel_consumed", "peak_memory_bytes", "wall_ms"] {
        assert!(attempt["usage"][key].is_u64(), "{attempt}");
    }
    assert!(attempt["started_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn binary_output_is_base64_in_json() {
    let dir = Workdir::new();
    let echo = dir.file("echo.wasm", fabric_agents::p1::ECHO);
    let input = dir.file("input.bin", &[0xff, 0xfe, 0x00]);
    let out = fabric(&[
        "run",
        echo.to_str().unwrap(),
        "--input-file",
        input.to_str().unwrap(),
        "--json",
    ]);
    let attempt = attempt_json(&out);
    assert_eq!(attempt["output_base64"], "//4A");
    assert!(attempt.get("output").is_none());
}

#[test]
fn input_can_come_from_stdin() {
    let dir = Workdir::new();
    let sha = dir.file("sha.wasm", fabric_agents::p1::SHA256);
    let out = fabric_with(
        &["run", sha.to_str().unwrap(), "--input-file", "-"],
        &[],
        b"abc",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn webassembly_text_runs_too() {
    let dir = Workdir::new();
    let hello = dir.file(
        "hello.wat",
        include_str!("../../../../agents/wat/hello.wat").as_bytes(),
    );
    let out = fabric(&["run", hello.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello from wat\n");
}

#[test]
fn a_non_zero_exit_is_status_one_with_the_code_in_json() {
    let dir = Workdir::new();
    let strict = dir.file("strict.wasm", fabric_agents::p1::STRICT);
    let out = fabric(&[
        "run",
        strict.to_str().unwrap(),
        "--input",
        "nonsense",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let attempt = attempt_json(&out);
    assert_eq!(attempt["outcome"], "exit");
    assert_eq!(attempt["exit_code"], 3);
    assert!(!attempt["stderr"].as_str().unwrap().is_empty());
}

#[test]
fn unreadable_modules_exit_two_with_one_clear_line() {
    let dir = Workdir::new();
    let text = dir.file("notes.wasm", b"these are not the bytes you are looking for");
    let truncated = dir.file("truncated.wasm", &fabric_agents::p1::ECHO[..1000]);
    let empty = dir.file("empty.wasm", b"");
    let cases = [
        (
            text.to_str().unwrap().to_string(),
            "not a WebAssembly module",
        ),
        (
            truncated.to_str().unwrap().to_string(),
            "invalid WebAssembly",
        ),
        (empty.to_str().unwrap().to_string(), "empty"),
        ("/nonexistent/agent.wasm".to_string(), "cannot read module"),
    ];
    for (path, expected) in cases {
        let out = fabric(&["run", &path]);
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(expected), "{path}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_usage_exits_two() {
    for args in [
        &["run"][..],
        &["run", "x.wasm", "--memory", "a lot"],
        &["run", "x.wasm", "--timeout", "soon"],
        &["run", "x.wasm", "--input", "a", "--input-file", "b"],
        &["run", "x.wasm", "--env", "NOEQUALS"],
    ] {
        assert_eq!(fabric(args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_hostile_loop_never_outlives_its_timeout_by_a_second() {
    let dir = Workdir::new();
    for (name, wasm) in [
        ("loop.wasm", fabric_agents::fixture("loop_forever")),
        ("sleep.wasm", fabric_agents::fixture("sleep_poll_oneoff")),
        ("start.wasm", fabric_agents::fixture("start_loop")),
    ] {
        let path = dir.file(name, &wasm);
        let started = Instant::now();
        let out = fabric(&[
            "run",
            path.to_str().unwrap(),
            "--timeout",
            "500ms",
            "--json",
        ]);
        let elapsed = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(attempt_json(&out)["outcome"], "timeout", "{name}");
        assert!(
            elapsed < Duration::from_millis(1_500) + Duration::from_secs(1),
            "{name}: {elapsed:?}"
        );
    }
}

#[test]
fn a_memory_bomb_never_grows_past_its_cap() {
    let dir = Workdir::new();
    let bomb = dir.file("bomb.wasm", &fabric_agents::fixture("memory_bomb"));
    let probe = dir.file("probe.wasm", fabric_agents::p1::PROBE);
    for (path, input) in [(&bomb, ""), (&probe, "alloc 64\n")] {
        let out = fabric(&[
            "run",
            path.to_str().unwrap(),
            "--memory",
            "8MiB",
            "--input",
            input,
            "--json",
        ]);
        let attempt = attempt_json(&out);
        assert_eq!(attempt["outcome"], "memory_limit", "{attempt}");
        assert!(
            attempt["usage"]["peak_memory_bytes"].as_u64().unwrap() <= 8 << 20,
            "{attempt}"
        );
    }
}

#[test]
fn more_declared_memory_than_the_limit_is_a_memory_limit_attempt() {
    let dir = Workdir::new();
    // Declares 128 MiB of initial memory.
    let huge = dir.file("huge.wasm", &fabric_agents::fixture("initial_memory_huge"));
    let huge = huge.to_str().unwrap();
    let out = fabric(&["run", huge, "--memory", "64MiB", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let attempt = attempt_json(&out);
    assert_eq!(attempt["outcome"], "memory_limit", "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap().contains("memory limit"),
        "{attempt}"
    );
    let out = fabric(&["run", huge, "--memory", "64MiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory_limit"), "{}", stderr(&out));
}

#[test]
fn a_hostile_guest_sees_no_host_file_variable_or_socket() {
    let dir = Workdir::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let secret = dir.file("secret.txt", b"TOP SECRET");
    let commands = format!(
        "read {}\nread /etc/passwd\nlist /\nenv\nconnect {addr}\nresolve localhost\n",
        secret.display()
    );
    for (name, wasm) in [
        ("p1.wasm", fabric_agents::p1::PROBE),
        ("p2.wasm", fabric_agents::p2::PROBE),
    ] {
        let path = dir.file(name, wasm);
        let out = fabric_with(
            &[
                "run",
                path.to_str().unwrap(),
                "--input",
                &commands,
                "--json",
            ],
            &[("FABRIC_TEST_SECRET", "hunter2")],
            b"",
        );
        let attempt = attempt_json(&out);
        assert_eq!(attempt["outcome"], "ok", "{attempt}");
        let report = attempt["output"].as_str().unwrap();
        assert!(
            !report.contains("TOP SECRET") && !report.contains("root:"),
            "{name}: {report}"
        );
        assert!(
            !report.contains("hunter2") && !report.contains("FABRIC_TEST_SECRET"),
            "{name}: {report}"
        );
        for line in report.lines().filter(|l| !l.starts_with("env ")) {
            assert!(line.contains("-> err:"), "{name}: {line}");
        }
        assert!(report.contains("env -> ok: 0 vars"), "{name}: {report}");
    }
    assert!(listener.accept().is_err(), "the listener saw a connection");
}

#[test]
fn granted_variables_reach_the_guest() {
    let dir = Workdir::new();
    let probe = dir.file("probe.wasm", fabric_agents::p1::PROBE);
    let out = fabric(&[
        "run",
        probe.to_str().unwrap(),
        "--input",
        "env\n",
        "--env",
        "REGION=eu",
        "--json",
    ]);
    assert_eq!(attempt_json(&out)["output"], "env -> ok: 1 vars: REGION\n");
}

#[test]
fn a_reporting_agent_shows_its_arguments_last_progress_and_kpis() {
    let dir = Workdir::new();
    let reporter = dir.file("reporter.wasm", fabric_agents::p2::REPORTER);
    let out = fabric(&[
        "run",
        reporter.to_str().unwrap(),
        "--input",
        "alpha beta\ngamma 42\ndelta\n",
        "--",
        "--print-args",
        "x",
    ]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let output = String::from_utf8_lossy(&out.stdout);
    assert!(
        output.starts_with("args=[\"--print-args\", \"x\"]\n"),
        "{output}"
    );
    assert!(log.contains("fabric: progress 100% line 3 of 3\n"), "{log}");
    assert!(
        log.contains(
            "fabric: kpi words: count 3 · mean 1.6666666666666667 · min 1 · max 2 · last 1"
        ),
        "{log}"
    );
    let json = fabric(&[
        "run",
        reporter.to_str().unwrap(),
        "--json",
        "--input",
        "a\n",
    ]);
    let attempt = attempt_json(&json);
    assert_eq!(attempt["kpis"]["lines"]["last"], 1.0, "{attempt}");
    assert!(
        !stderr(&json).contains("fabric: progress"),
        "--json prints only the attempt"
    );
}
