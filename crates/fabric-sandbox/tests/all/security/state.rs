//! Between attempts: globals, memory and input never carry over from one attempt to the
//! next.

use fabric_sandbox::{CancelToken, RunRequest};
use fabric_types::Outcome;

use crate::util::*;

#[tokio::test]
async fn attack_state_globals_and_memory_start_fresh_every_attempt() {
    let wasm = fabric_agents::fixture("state_leak");
    for _ in 0..5 {
        let attempt = run(&wasm, b"").await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), "global=0 memory=0\n");
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_state_one_attempts_input_never_reaches_the_next_attempts_memory() {
    let wasm = fabric_agents::fixture("memory_dump");
    let agent = load(&wasm);
    for round in 0..20 {
        let secret = format!("tenant {round} secret: {}", "s".repeat(200));
        let request = RunRequest {
            input: secret.clone().into_bytes(),
            limits: tight(),
            ..RunRequest::default()
        };
        let attempt = sandbox().run(&agent, request, &CancelToken::new()).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(attempt.output.len(), 512, "{attempt:?}");
        assert!(
            attempt.output.iter().all(|b| *b == 0),
            "round {round} saw an earlier attempt's memory: {:?}",
            text(&attempt.output)
        );
    }
    assert_serves(sandbox()).await;
}
