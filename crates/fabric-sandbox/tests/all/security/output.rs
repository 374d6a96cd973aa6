//! Output: floods of stdout and stderr are capped and flagged.

use std::time::Duration;

use fabric_types::{Limits, Outcome};

use super::{assert_timed_out_within, timeout_ms};
use crate::util::*;

#[tokio::test]
async fn attack_output_stdout_flood_is_capped_and_flagged() {
    let attempt = run_fixture("stdout_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
    assert!(attempt.output.iter().all(|b| *b == b'x'));
    assert!(attempt.output_truncated);
    assert!(!attempt.stderr_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_stderr_flood_is_capped_and_flagged() {
    let attempt = run_fixture("stderr_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.stderr.len() as u64, Limits::DEFAULT_LOG_BYTES);
    assert!(attempt.stderr_truncated);
    assert!(attempt.output.is_empty() && !attempt.output_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_endless_writer_ends_by_timeout_with_capped_output() {
    let attempt = run_fixture("write_forever", timeout_ms(300)).await;
    assert_timed_out_within(&attempt, 300, Duration::from_secs(1));
    assert_eq!(attempt.output.len() as u64, Limits::DEFAULT_OUTPUT_BYTES);
    assert!(attempt.output_truncated);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_output_endless_writer_ends_by_fuel_with_capped_output() {
    let limits = Limits {
        fuel: 200_000,
        output_bytes: 4096,
        ..tight()
    };
    let attempt = run_fixture("write_forever", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    assert_eq!(attempt.usage.fuel_consumed, 200_000);
    assert_eq!(attempt.output.len(), 4096);
    assert!(attempt.output_truncated);
    assert_serves(sandbox()).await;
}
