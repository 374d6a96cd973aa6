//! CPU: endless loops and busy waits end by timeout or fuel, and fuel is billed exactly.

use std::time::{Duration, Instant};

use fabric_sandbox::{CancelToken, RunRequest};
use fabric_types::{Limits, Outcome};

use super::{assert_timed_out_within, timeout_ms};
use crate::util::*;

#[tokio::test]
async fn attack_cpu_endless_loop_in_start_is_stopped_by_the_timeout() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("loop_forever", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(attempt.usage.fuel_consumed > 0, "{attempt:?}");
    assert!(attempt.usage.fuel_consumed < limits.fuel, "{attempt:?}");
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_endless_start_function_is_stopped_during_instantiation() {
    let attempt = run_fixture("start_loop", timeout_ms(300)).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(
        attempt.usage.fuel_consumed > 0,
        "the start function ran: {attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_clock_time_get_busy_loop_that_fuel_undercounts_times_out() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("busy_host_calls", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    // 300 ms of host calls billed well under 1% of the budget: fuel alone would have let
    // this guest run for minutes.
    assert!(
        attempt.usage.fuel_consumed < limits.fuel / 100,
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_random_get_busy_loop_that_fuel_undercounts_times_out() {
    let limits = timeout_ms(300);
    let attempt = run_fixture("random_get_loop", limits).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert!(
        attempt.usage.fuel_consumed < limits.fuel / 100,
        "{attempt:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_long_poll_oneoff_sleep_ends_within_a_tick_of_a_short_timeout() {
    let agent = load(&fabric_agents::fixture("sleep_poll_oneoff"));
    let request = RunRequest {
        limits: timeout_ms(100),
        ..RunRequest::default()
    };
    let started = Instant::now();
    let attempt = sandbox().run(&agent, request, &CancelToken::new()).await;
    let took = started.elapsed();
    // The guest asked for 60 s; the wall-clock race drops it at its deadline, which does
    // not wait for an epoch tick. Allow three ticks of scheduling noise on a busy machine.
    assert_timed_out_within(&attempt, 100, TICK * 3);
    assert!(took < Duration::from_millis(100) + TICK * 3, "{took:?}");
    assert_serves(sandbox()).await;
}

/// A module whose `_start` counts a local down from `n` to zero: per iteration
/// `local.get`, `i32.eqz`, `br_if`, `local.get`, `i32.const`, `i32.sub`, `local.set`,
/// `br` (8 units of fuel; `block`, `loop` and `end` are free).
fn countdown(n: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (local.set $n (i32.const {n}))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))))"#
    ))
    .unwrap()
}

/// Fuel a loop of known instruction count is billed, from outside the loop.
const COUNTDOWN_FUEL_PER_ITERATION: u64 = 8;
/// What a countdown is billed besides its iterations: the entry, the first `local.set`
/// and the last test. Documented band: 0..=16.
const COUNTDOWN_FUEL_OVERHEAD: std::ops::RangeInclusive<u64> = 0..=16;

#[tokio::test]
async fn attack_cpu_fuel_of_a_loop_of_known_instruction_count_is_exact() {
    let n = 3_000_000; // three fuel slices: the slicing must not lose or add fuel
    let fuel = |n: u32| async move {
        let attempt = run(&countdown(n), b"").await;
        assert_outcome(&attempt, Outcome::Ok);
        attempt.usage.fuel_consumed
    };
    let (once, twice) = (fuel(n).await, fuel(2 * n).await);
    assert_eq!(
        twice - once,
        COUNTDOWN_FUEL_PER_ITERATION * u64::from(n),
        "each iteration costs exactly its 8 counted instructions"
    );
    let overhead = once - COUNTDOWN_FUEL_PER_ITERATION * u64::from(n);
    assert!(
        COUNTDOWN_FUEL_OVERHEAD.contains(&overhead),
        "overhead {overhead} outside the documented band {COUNTDOWN_FUEL_OVERHEAD:?}"
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_the_same_program_costs_the_same_fuel_twice() {
    for wasm in [
        countdown(12_345),
        fabric_agents::p1::SHA256.to_vec(),
        fabric_agents::p2::SHA256.to_vec(),
    ] {
        let first = run(&wasm, b"the same input").await;
        let second = run(&wasm, b"the same input").await;
        assert_outcome(&first, Outcome::Ok);
        assert_outcome(&second, Outcome::Ok);
        assert_eq!(first.output, second.output);
        assert_eq!(
            first.usage.fuel_consumed, second.usage.fuel_consumed,
            "fuel is deterministic"
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_fuel_budget_stops_an_endless_loop_at_exactly_the_budget() {
    let limits = Limits {
        fuel: 2_500_000,
        ..tight()
    };
    let attempt = run_fixture("loop_forever", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 2_500_000);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_cpu_bulk_memory_fill_is_billed_per_byte() {
    // One `memory.fill` of 16 MiB is one instruction but 16 Mi bytes of work.
    let fill = |times: u32| {
        wat::parse_str(format!(
            r#"(module
  (memory (export "memory") 300)
  (func (export "_start") (local $i i32)
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.const 0x1000000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {times}))))))"#
        ))
        .unwrap()
    };
    let once = run(&fill(1), b"").await;
    assert_outcome(&once, Outcome::Ok);
    assert!(
        (0x100_0000..0x100_0000 + 32).contains(&once.usage.fuel_consumed),
        "{once:?}"
    );
    // A budget of 100 Mi fuel allows six fills, not a million.
    let limits = Limits {
        fuel: 100 << 20,
        ..tight()
    };
    let many = run_with(&fill(1_000_000), b"", limits).await;
    assert_outcome(&many, Outcome::OutOfFuel);
    assert!(many.usage.wall_ms < 1_000, "{many:?}");
    assert_serves(sandbox()).await;
}
