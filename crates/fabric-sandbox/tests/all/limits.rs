//! Every per-attempt limit, each broken by a guest that really tries.

use std::time::Duration;

use fabric_types::{Limits, Outcome};

use crate::util::*;

fn timeout_ms(ms: u64) -> Limits {
    Limits {
        timeout_ms: ms,
        ..Limits::default()
    }
}

/// The timeout fired, and not much more than a second late.
#[track_caller]
fn assert_timed_out(attempt: &fabric_types::Attempt, timeout_ms: u64) {
    assert_outcome(attempt, Outcome::Timeout);
    assert!(
        attempt.usage.wall_ms >= timeout_ms,
        "ended early: {attempt:?}"
    );
    assert!(
        attempt.usage.wall_ms < timeout_ms + 1_000,
        "outlived its timeout: {attempt:?}"
    );
}

#[tokio::test]
async fn an_endless_loop_times_out() {
    let attempt = run_fixture("loop_forever", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
    assert!(attempt.usage.fuel_consumed > 0);
    assert_healthy().await;
}

#[tokio::test]
async fn an_endless_loop_in_a_component_times_out() {
    let attempt = run_with(fabric_agents::p2::PROBE, b"spin\n", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
}

#[tokio::test]
async fn an_endless_loop_runs_out_of_exactly_its_fuel() {
    let limits = Limits {
        fuel: 1_000_000,
        ..tight()
    };
    let attempt = run_fixture("loop_forever", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 1_000_000);
}

#[tokio::test]
async fn a_component_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 5_000_000,
        ..tight()
    };
    let attempt = run_with(fabric_agents::p2::PROBE, b"spin\n", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 5_000_000);
}

#[tokio::test]
async fn an_endless_start_function_times_out_during_instantiation() {
    let attempt = run_fixture("start_loop", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
    assert_healthy().await;
}

#[tokio::test]
async fn a_long_poll_oneoff_sleep_times_out_while_parked_in_the_host() {
    let attempt = run_fixture("sleep_poll_oneoff", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
}

#[tokio::test]
async fn a_long_sleep_in_a_component_times_out() {
    let attempt = run_with(fabric_agents::p2::SLEEP, b"60000", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
}

#[tokio::test]
async fn a_loop_of_host_calls_times_out() {
    let attempt = run_fixture("busy_host_calls", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
}

#[tokio::test]
async fn a_short_sleep_finishes_inside_its_timeout() {
    let attempt = run_with(fabric_agents::p1::SLEEP, b"50", timeout_ms(2_000)).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(text(&attempt.output).trim(), "slept 50 ms");
    assert!(attempt.usage.wall_ms >= 50);
}

#[tokio::test]
async fn fuel_accounting_is_deterministic_and_proportional() {
    let fuel_for = |n: u32| async move {
        let attempt = run_with(
            &fabric_agents::fixture("fuel_counter"),
            &n.to_le_bytes(),
            tight(),
        )
        .await;
        assert_outcome(&attempt, Outcome::Ok);
        attempt.usage.fuel_consumed
    };
    let (a, a_again, b, c) = (
        fuel_for(1000).await,
        fuel_for(1000).await,
        fuel_for(2000).await,
        fuel_for(3000).await,
    );
    assert_eq!(a, a_again, "the same work costs the same fuel");
    assert!(b > a);
    assert_eq!(b - a, c - b, "each extra 1000 iterations costs the same");
}

#[tokio::test]
async fn a_memory_grow_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..tight()
    };
    let attempt = run_fixture("memory_bomb", limits).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(attempt.usage.peak_memory_bytes <= 16 << 20, "{attempt:?}");
    assert!(attempt.usage.peak_memory_bytes > 15 << 20, "{attempt:?}");
    assert_healthy().await;
}

#[tokio::test]
async fn an_initial_memory_above_the_cap_hits_the_memory_limit() {
    let attempt = run_fixture("initial_memory_huge", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert_eq!(attempt.usage.peak_memory_bytes, 0, "nothing was allocated");
}

#[tokio::test]
async fn the_memory_limit_covers_all_memories_together() {
    let attempt = run_fixture("many_memories", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(attempt.usage.peak_memory_bytes <= Limits::DEFAULT_MEMORY_BYTES);
}

#[tokio::test]
async fn a_table_grow_bomb_hits_the_limit() {
    let attempt = run_fixture("table_bomb", tight()).await;
    assert_outcome(&attempt, Outcome::MemoryLimit);
    assert!(
        attempt.error.as_deref().unwrap().contains("table"),
        "{attempt:?}"
    );
}

#[tokio::test]
async fn a_rust_allocation_over_the_cap_hits_the_memory_limit() {
    for wasm in [fabric_agents::p1::PROBE, fabric_agents::p2::PROBE] {
        let limits = Limits {
            memory_bytes: 32 << 20,
            ..tight()
        };
        let attempt = run_with(wasm, b"alloc 100\n", limits).await;
        assert_outcome(&attempt, Outcome::MemoryLimit);
        assert!(attempt.usage.peak_memory_bytes <= 32 << 20);
    }
}

#[tokio::test]
async fn an_allocation_under_the_cap_succeeds() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..tight()
    };
    let attempt = run_with(fabric_agents::p1::PROBE, b"alloc 16\n", limits).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert!(attempt.usage.peak_memory_bytes >= 16 << 20);
}

#[tokio::test]
async fn a_memory_limit_over_the_sandbox_maximum_is_refused() {
    let limits = Limits {
        memory_bytes: 8 << 30,
        ..tight()
    };
    let attempt = run_with(fabric_agents::p1::ECHO, b"x", limits).await;
    assert_outcome(&attempt, Outcome::Invalid);
    assert!(attempt.error.unwrap().contains("maximum"));
}

#[tokio::test]
async fn deep_recursion_overflows_the_wasm_stack_not_the_host() {
    let attempt = run_fixture("deep_recursion", tight()).await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("stack_overflow"));
    assert_healthy().await;
}

#[tokio::test]
async fn a_stdout_flood_is_cut_at_the_output_cap() {
    let attempt = run_fixture("stdout_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
    assert!(attempt.output_truncated);
    assert!(!attempt.stderr_truncated);
}

#[tokio::test]
async fn a_stderr_flood_is_cut_at_the_log_cap() {
    let attempt = run_fixture("stderr_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.stderr.len() as u64, Limits::DEFAULT_LOG_BYTES);
    assert!(attempt.stderr_truncated);
}

#[tokio::test]
async fn an_output_cap_set_per_attempt_is_honoured() {
    for wasm in [fabric_agents::p1::PROBE, fabric_agents::p2::PROBE] {
        let limits = Limits {
            output_bytes: 1000,
            log_bytes: 10,
            ..tight()
        };
        let attempt = run_with(wasm, b"print 100000\neprint 5000\n", limits).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(attempt.output.len(), 1000);
        assert_eq!(attempt.stderr.len(), 10);
        assert!(attempt.output_truncated && attempt.stderr_truncated);
    }
}

#[tokio::test]
async fn an_endless_writer_is_stopped_by_its_timeout() {
    let attempt = run_fixture("write_forever", timeout_ms(300)).await;
    assert_timed_out(&attempt, 300);
    assert!(attempt.output_truncated);
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
}

#[tokio::test]
async fn many_sleeping_agents_are_in_flight_at_once() {
    let agent = load(fabric_agents::p1::SLEEP);
    let started = std::time::Instant::now();
    let attempts = futures_join_all((0..200).map(|_| {
        let agent = agent.clone();
        async move {
            let request = fabric_sandbox::RunRequest {
                input: b"500".to_vec(),
                limits: tight(),
                env: Vec::new(),
                ..Default::default()
            };
            sandbox()
                .run(&agent, request, &fabric_sandbox::CancelToken::new())
                .await
        }
    }))
    .await;
    for attempt in &attempts {
        assert_outcome(attempt, Outcome::Ok);
    }
    // 200 sleeps of 500 ms one after another would take 100 s; overlapped they take ~0.5 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("attempt task panicked"));
    }
    out
}
