//! Every outcome of docs/api.md, produced by a guest that really ends that way.

use fabric_sandbox::{CancelToken, RunRequest};
use fabric_types::{Limits, Outcome};
use sha2::{Digest, Sha256};

use crate::util::*;

#[tokio::test]
async fn echo_module_returns_its_input_as_output() {
    let attempt = run(fabric_agents::p1::ECHO, b"hello, fabric").await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, b"hello, fabric");
    assert_eq!(attempt.exit_code, Some(0));
    assert!(attempt.usage.fuel_consumed > 0);
    assert!(attempt.usage.peak_memory_bytes >= 65536);
    assert!(attempt.started_at.unwrap() <= attempt.finished_at.unwrap());
}

#[tokio::test]
async fn echo_component_returns_its_input_as_output() {
    let attempt = run(fabric_agents::p2::ECHO, b"hello, component").await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, b"hello, component");
    assert!(attempt.usage.fuel_consumed > 0);
}

#[tokio::test]
async fn binary_input_passes_through_unchanged() {
    let input: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let attempt = run(fabric_agents::p1::ECHO, &input).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, input);
}

#[tokio::test]
async fn sha256_agent_hashes_its_input() {
    for wasm in [fabric_agents::p1::SHA256, fabric_agents::p2::SHA256] {
        let attempt = run(wasm, b"abc").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(
            text(&attempt.output).trim(),
            hex::encode(Sha256::digest(b"abc"))
        );
    }
}

#[tokio::test]
async fn wordcount_agent_counts_words() {
    let attempt = run(
        fabric_agents::p1::WORDCOUNT,
        b"the cat saw the dog\nthe end\n",
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    let report: serde_json::Value = serde_json::from_slice(&attempt.output).unwrap();
    assert_eq!(report["words"], 7);
    assert_eq!(report["lines"], 2);
    assert_eq!(report["top"][0][0], "the");
    assert_eq!(report["top"][0][1], 3);
}

#[tokio::test]
async fn strict_agent_exits_non_zero_on_bad_input() {
    let good = run(fabric_agents::p1::STRICT, br#"{"name": "ada"}"#).await;
    assert_outcome(&good, Outcome::Ok);
    assert_eq!(text(&good.output).trim(), "hello, ada");

    let bad = run(fabric_agents::p1::STRICT, b"not json").await;
    assert_outcome(&bad, Outcome::Exit);
    assert_eq!(bad.exit_code, Some(3));
    assert!(!bad.stderr.is_empty(), "the reason goes to stderr");
}

#[tokio::test]
async fn proc_exit_code_is_reported() {
    let attempt = run_fixture("exit_42", tight()).await;
    assert_outcome(&attempt, Outcome::Exit);
    assert_eq!(attempt.exit_code, Some(42));
}

#[tokio::test]
async fn component_exit_failure_is_an_exit_outcome() {
    let attempt = run(fabric_agents::p2::PROBE, b"exit 7\n").await;
    assert_outcome(&attempt, Outcome::Exit);
    assert_ne!(attempt.exit_code, Some(0));
}

#[tokio::test]
async fn unreachable_is_a_trap_with_its_kind() {
    let attempt = run_fixture("trap_unreachable", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("unreachable"));
    assert_healthy().await;
}

#[tokio::test]
async fn division_by_zero_is_a_trap_with_its_kind() {
    let attempt = run_fixture("divide_by_zero", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("integer_divide_by_zero"));
}

#[tokio::test]
async fn a_rust_panic_is_a_trap() {
    for wasm in [fabric_agents::p1::PROBE, fabric_agents::p2::PROBE] {
        let attempt = run(wasm, b"panic\n").await;
        assert_outcome(&attempt, Outcome::Trap);
        assert_eq!(attempt.trap.as_deref(), Some("unreachable"));
        assert!(
            text(&attempt.stderr).contains("panicked"),
            "{}",
            text(&attempt.stderr)
        );
    }
}

#[tokio::test]
async fn a_trap_in_the_start_function_is_a_trap() {
    let attempt = run_fixture("start_trap", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("unreachable"));
}

#[tokio::test]
async fn an_out_of_bounds_data_segment_fails_instantiation_as_a_trap() {
    let attempt = run_fixture("huge_data_segment", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("memory_out_of_bounds"));
}

#[tokio::test]
async fn unknown_import_is_invalid() {
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
    assert_eq!(attempt.usage.fuel_consumed, 0, "nothing ran");
}

#[tokio::test]
async fn wrong_import_signature_is_invalid() {
    let attempt = run_fixture("wrong_signature", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(
        attempt.error.as_deref().unwrap().contains("fd_write"),
        "{attempt:?}"
    );
}

#[tokio::test]
async fn module_without_start_is_invalid() {
    let attempt = run_fixture("no_start", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(attempt.error.as_deref().unwrap().contains("_start"));
}

#[tokio::test]
async fn cancelling_a_computing_guest_ends_it_within_a_tick() {
    let agent = load(&fabric_agents::fixture("loop_forever"));
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            cancel.cancel();
            std::time::Instant::now()
        })
    };
    let limits = Limits {
        timeout_ms: 30_000,
        ..Limits::default()
    };
    let request = RunRequest {
        input: Vec::new(),
        limits,
        env: Vec::new(),
        ..Default::default()
    };
    let attempt = sandbox().run(&agent, request, &cancel).await;
    let cancelled_at = canceller.await.unwrap();
    assert_outcome(&attempt, Outcome::Cancelled);
    let late = cancelled_at.elapsed();
    assert!(late < TICK * 20, "ended {late:?} after the cancel");
    assert_healthy().await;
}

#[tokio::test]
async fn cancelling_a_sleeping_guest_ends_it_at_once() {
    for wasm in [
        fabric_agents::fixture("sleep_poll_oneoff"),
        fabric_agents::p2::SLEEP.to_vec(),
    ] {
        let agent = load(&wasm);
        let cancel = CancelToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            trigger.cancel();
        });
        let limits = Limits {
            timeout_ms: 30_000,
            ..Limits::default()
        };
        let request = RunRequest {
            input: b"60000".to_vec(),
            limits,
            env: Vec::new(),
            ..Default::default()
        };
        let attempt = sandbox().run(&agent, request, &cancel).await;
        assert_outcome(&attempt, Outcome::Cancelled);
        assert!(attempt.usage.wall_ms < 1_000, "{attempt:?}");
    }
}

#[tokio::test]
async fn a_cancel_raised_before_the_start_ends_the_attempt_without_output() {
    let agent = load(fabric_agents::p1::ECHO);
    let cancel = CancelToken::new();
    cancel.cancel();
    let request = RunRequest {
        input: b"never echoed".to_vec(),
        limits: tight(),
        env: Vec::new(),
        ..Default::default()
    };
    let attempt = sandbox().run(&agent, request, &cancel).await;
    assert_outcome(&attempt, Outcome::Cancelled);
}

#[tokio::test]
async fn the_attempt_serializes_as_api_md_says() {
    let attempt = run(fabric_agents::p1::ECHO, b"json").await;
    let json = serde_json::to_value(&attempt).unwrap();
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["output"], "json");
    assert_eq!(json["exit_code"], 0);
    for key in ["fuel_consumed", "peak_memory_bytes", "wall_ms"] {
        assert!(json["usage"][key].is_u64(), "{key}: {json}");
    }
    let started = json["started_at"].as_str().unwrap();
    assert!(
        started.ends_with('Z') && started.len() == "2026-01-01T00:00:00.000Z".len(),
        "{started}"
    );
}
