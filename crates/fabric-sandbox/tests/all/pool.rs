//! The instance pool holds the per-attempt maxima for every slot: attempts that each take
//! the most memories and tables they may cannot exhaust it for anyone else.

use std::sync::Arc;

use fabric_sandbox::{CancelToken, RunRequest, Sandbox, SandboxConfig};
use fabric_types::{Limits, Outcome};

use crate::util::{TICK, assert_outcome, assert_serves, text};

/// A command module with the most memories (4) and tables (16) an attempt may have, which
/// spins until its deadline.
fn hog() -> String {
    let tables: String = (0..SandboxConfig::DEFAULT_MAX_TABLES)
        .map(|_| "(table 1 funcref)")
        .collect();
    format!(
        r#"(module
            (memory (export "memory") 1) (memory 1) (memory 1) (memory 1)
            {tables}
            (func (export "_start") (loop $spin (br $spin))))"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_pool_maxima_held_by_one_tenant_fail_no_other_attempt() {
    const SLOTS: u32 = 4;
    let sandbox = Arc::new(
        Sandbox::new(SandboxConfig {
            slots: SLOTS,
            epoch_tick: TICK,
            ..SandboxConfig::default()
        })
        .unwrap(),
    );
    assert!(
        sandbox.is_pooling(),
        "the test is about the pooling allocator"
    );
    let hog = sandbox
        .load(&wat::parse_str(hog()).unwrap())
        .expect("a module at the maxima loads");

    // Every slot but one is taken by an attempt holding the maxima; each runs until its
    // one-second deadline, so they overlap.
    let hogs: Vec<_> = (1..SLOTS)
        .map(|_| {
            let (sandbox, hog) = (sandbox.clone(), hog.clone());
            tokio::spawn(async move {
                let request = RunRequest {
                    limits: Limits {
                        timeout_ms: 1_000,
                        ..Limits::default()
                    },
                    ..RunRequest::default()
                };
                sandbox.run(&hog, request, &CancelToken::new()).await
            })
        })
        .collect();

    // Meanwhile another tenant's ordinary attempts, one after another in the last slot.
    let echo = sandbox.load(fabric_agents::p1::ECHO).unwrap();
    for i in 0..20 {
        let input = format!("victim {i}");
        let request = RunRequest {
            input: input.clone().into_bytes(),
            ..RunRequest::default()
        };
        let attempt = sandbox.run(&echo, request, &CancelToken::new()).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), input);
    }
    for hog in hogs {
        // Each hog ran to its deadline: none was refused a pool slot (`invalid`).
        assert_outcome(&hog.await.unwrap(), Outcome::Timeout);
    }
    assert_serves(&sandbox).await;
}
