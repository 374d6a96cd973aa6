//! No ambient authority: no host files, no host environment, no network, no state carried
//! from one attempt to the next.

use std::net::TcpListener;

use fabric_sandbox::{CancelToken, RunRequest};
use fabric_types::Outcome;

use crate::util::*;

/// Runs the probe agent (p1 and p2) with these commands and returns each one's result line.
async fn probe(wasm: &[u8], commands: &str) -> Vec<String> {
    let attempt = run(wasm, commands.as_bytes()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let lines: Vec<String> = text(&attempt.output).lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        commands.lines().count(),
        "one line per command: {lines:?}"
    );
    lines
}

fn probes() -> [(&'static str, &'static [u8]); 2] {
    [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ]
}

#[tokio::test]
async fn host_files_cannot_be_read_listed_or_written() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let commands = format!(
        "read /etc/passwd\nread {}\nread ../../etc/passwd\nlist /\nlist .\nwrite /tmp/fabric-escape\n",
        secret.path().display()
    );
    for (kind, wasm) in probes() {
        for line in probe(wasm, &commands).await {
            assert!(line.contains("-> err:"), "{kind}: {line}");
            assert!(
                !line.contains("host secret") && !line.contains("root:"),
                "{kind}: {line}"
            );
        }
    }
    assert!(!std::path::Path::new("/tmp/fabric-escape").exists());
    assert_healthy().await;
}

#[tokio::test]
async fn file_descriptors_beyond_stdio_do_not_exist() {
    let attempt = run_fixture("read_fds", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = text(&attempt.output);
    let tries: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with("read 0 "))
        .collect();
    assert!(tries.len() >= 10, "{report}");
    for line in tries {
        // stdin (fd 0) reads its empty input; stdout and stderr are not readable; every
        // other fd does not exist.
        assert!(!line.ends_with("errno=0"), "succeeded: {line}\n{report}");
    }
}

#[tokio::test]
async fn the_host_environment_is_not_inherited() {
    let host_path = std::env::var("PATH").expect("the test process has a PATH");
    for (kind, wasm) in probes() {
        let lines = probe(wasm, "env\nargs\n").await;
        assert_eq!(lines[0], "env -> ok: 0 vars", "{kind}");
        assert!(!lines.join("\n").contains(&host_path), "{kind}");
        assert!(
            lines[1].starts_with("args -> ok: 1"),
            "{kind}: {}",
            lines[1]
        );
    }
}

#[tokio::test]
async fn granted_environment_variables_are_all_the_guest_sees() {
    for (kind, wasm) in probes() {
        let agent = load(wasm);
        let request = RunRequest {
            input: b"env\n".to_vec(),
            limits: tight(),
            env: vec![("GREETING".into(), "hello".into())],
            ..Default::default()
        };
        let attempt = sandbox().run(&agent, request, &CancelToken::new()).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(
            text(&attempt.output).trim(),
            "env -> ok: 1 vars: GREETING",
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_component_cannot_connect_to_a_listener_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = probe(
        fabric_agents::p2::PROBE,
        &format!("connect {addr}\nconnect [::1]:{}\n", addr.port()),
    )
    .await;
    for line in &lines {
        assert!(line.contains("-> err:"), "{line}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    assert_healthy().await;
}

#[tokio::test]
async fn a_module_cannot_connect_or_resolve() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = probe(
        fabric_agents::p1::PROBE,
        &format!("connect {addr}\nresolve localhost\n"),
    )
    .await;
    for line in &lines {
        assert!(line.contains("-> err:"), "{line}");
    }
    assert!(listener.accept().is_err());
}

#[tokio::test]
async fn name_lookup_is_refused() {
    for (kind, wasm) in probes() {
        let lines = probe(wasm, "resolve localhost\nresolve example.com\n").await;
        for line in &lines {
            assert!(line.contains("-> err:"), "{kind}: {line}");
        }
    }
}

#[tokio::test]
async fn socket_calls_on_any_fd_fail() {
    let attempt = run_fixture("sock_calls", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let report = text(&attempt.output);
    assert!(report.lines().count() >= 20, "{report}");
    for line in report.lines() {
        assert!(!line.ends_with("errno=0"), "succeeded: {line}");
    }
}

#[tokio::test]
async fn no_state_survives_from_one_attempt_to_the_next() {
    let wasm = fabric_agents::fixture("state_leak");
    for _ in 0..3 {
        let attempt = run(&wasm, b"").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output).trim(), "global=0 memory=0");
    }
}

#[tokio::test]
async fn one_attempt_never_sees_another_attempts_input_or_output() {
    let (a, b) = tokio::join!(
        run(fabric_agents::p1::ECHO, b"tenant a"),
        run(fabric_agents::p1::ECHO, b"tenant b")
    );
    assert_eq!(a.output, b"tenant a");
    assert_eq!(b.output, b"tenant b");
}
