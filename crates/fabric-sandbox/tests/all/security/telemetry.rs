//! Telemetry: floods of calls, too many KPI names, bad pointers, lengths and values, and
//! host functions that do not exist or have other types. Every refused call answers its
//! code (or message) and the attempt goes on; what was recorded survives a trap.

use fabric_sandbox::{ProgressCell, RunRequest, SandboxConfig, TELEMETRY_CALL_FUEL};
use fabric_types::{KpiStats, Outcome, TelemetryRefusal};

use crate::util::*;

const MAX_CALLS: u32 = SandboxConfig::DEFAULT_MAX_TELEMETRY_CALLS;

/// Runs the fixture `name` with a progress cell of its own.
async fn run_watched(name: &str) -> (fabric_types::Attempt, ProgressCell) {
    let progress = ProgressCell::new();
    let request = RunRequest {
        limits: tight(),
        progress: progress.clone(),
        ..RunRequest::default()
    };
    (
        run_request(&fabric_agents::fixture(name), request).await,
        progress,
    )
}

#[tokio::test]
async fn attack_telemetry_flood_of_a_million_calls_is_cut_at_the_limit() {
    let attempt = run_fixture("telemetry_flood", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let refused = 1_000_000 - MAX_CALLS;
    assert_eq!(
        text(&attempt.output),
        format!("taken={MAX_CALLS} refused={refused} other=0\n")
    );
    assert_eq!(TelemetryRefusal::TooManyCalls.code(), 5);
    let flood = attempt.kpis["flood"];
    assert_eq!(flood.count, u64::from(MAX_CALLS));
    let last = f64::from(MAX_CALLS - 1);
    assert_eq!((flood.min, flood.max, flood.last), (0.0, last, last));
    assert_eq!(flood.sum, last * (last + 1.0) / 2.0);
    assert_eq!(attempt.kpis.len(), 1);
    // Every call, refused or taken, burned its fuel.
    assert!(attempt.usage.fuel_consumed >= 1_000_000 * TELEMETRY_CALL_FUEL);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_telemetry_flood_runs_out_of_fuel_when_it_cannot_pay() {
    // Fuel for about 2,000 calls: the flood ends `out_of_fuel`, keeping what it recorded.
    let limits = fabric_types::Limits {
        fuel: 2_000 * TELEMETRY_CALL_FUEL,
        ..tight()
    };
    let attempt = run_fixture("telemetry_flood", limits).await;
    assert_outcome(&attempt, Outcome::OutOfFuel);
    let count = attempt.kpis["flood"].count;
    assert!((1_000..=2_000).contains(&count), "{count}");
    assert!(attempt.output.is_empty());
}

#[tokio::test]
async fn attack_telemetry_flood_from_a_component_is_cut_at_the_limit() {
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::REPORTER),
        ("p2", fabric_agents::p2::REPORTER),
    ] {
        let request = RunRequest {
            args: vec!["--flood".into(), "25000".into()],
            limits: tight(),
            ..RunRequest::default()
        };
        let attempt = run_request(wasm, request).await;
        assert_outcome(&attempt, Outcome::Ok);
        let refusal = match kind {
            "p1" => "refused by the host (code 5: too many telemetry calls)".to_owned(),
            _ => format!("refused by the host: {}", TelemetryRefusal::TooManyCalls),
        };
        assert_eq!(
            text(&attempt.output),
            format!(
                "flood calls=25000 taken={MAX_CALLS} refused={}\nlast refusal: {refusal}\n",
                25_000 - MAX_CALLS
            ),
            "{kind}"
        );
        assert_eq!(attempt.kpis["flood"].count, u64::from(MAX_CALLS), "{kind}");
        assert!(
            attempt.usage.fuel_consumed >= 25_000 * TELEMETRY_CALL_FUEL,
            "{kind}"
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_telemetry_too_many_names_keeps_the_first_64() {
    let attempt = run_fixture("telemetry_names", tight()).await;
    assert_outcome(&attempt, Outcome::Ok);
    let max = SandboxConfig::DEFAULT_MAX_KPI_NAMES;
    assert_eq!(max, 64);
    assert_eq!(
        text(&attempt.output),
        format!(
            "taken={max} refused=1 last={} again=0\n",
            TelemetryRefusal::TooManyNames.code()
        )
    );
    assert_eq!(attempt.kpis.len(), max);
    assert!(!attempt.kpis.contains_key("name64"));
    assert_eq!(attempt.kpis["name00"].count, 2);
    assert_eq!(attempt.kpis["name00"].last, 2.0);
    assert_eq!(attempt.kpis["name63"], KpiStats::new(1.0));
}

#[tokio::test]
async fn attack_telemetry_bad_arguments_are_refused_and_the_attempt_goes_on() {
    let (attempt, progress) = run_watched("telemetry_bad_calls").await;
    assert_outcome(&attempt, Outcome::Ok);
    let (pointer, value, name, message) = (
        TelemetryRefusal::BadPointer.code(),
        TelemetryRefusal::BadValue.code(),
        TelemetryRefusal::BadName.code(),
        TelemetryRefusal::BadMessage.code(),
    );
    let expected = [
        ("kpi_across_the_end", pointer),
        ("kpi_negative_pointer", pointer),
        ("kpi_huge_length", pointer),
        ("kpi_far_pointer", pointer),
        ("progress_across_the_end", pointer),
        ("progress_negative_length", pointer),
        ("kpi_nan", value),
        ("kpi_infinity", value),
        ("kpi_minus_infinity", value),
        ("progress_1.5", value),
        ("progress_negative", value),
        ("progress_nan", value),
        ("kpi_uppercase_name", name),
        ("kpi_empty_name", name),
        ("kpi_name_of_65_bytes", name),
        ("kpi_name_not_utf8", name),
        ("progress_message_of_257_bytes", message),
        ("progress_message_of_10_mib", message),
        ("progress_message_not_utf8", message),
        ("kpi_ok", 0),
        ("progress_ok", 0),
    ];
    let expected: String = expected
        .iter()
        .map(|(label, code)| format!("{label}={code}\n"))
        .collect();
    assert_eq!(text(&attempt.output), expected);
    assert_eq!(attempt.kpis.len(), 1, "{:?}", attempt.kpis);
    assert_eq!(attempt.kpis["ok"], KpiStats::new(1.0));
    let (changes, latest) = progress.changed_since(0).unwrap();
    assert_eq!(
        (changes, latest.done, latest.message.as_str()),
        (1, 0.5, "half")
    );
    // Refused for its length, the 10 MiB message was never copied: the call read nothing
    // the hostcall bound would have had to allow.
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_telemetry_kpis_survive_a_trap() {
    let (attempt, progress) = run_watched("telemetry_then_trap").await;
    assert_outcome(&attempt, Outcome::Trap);
    assert_eq!(attempt.trap.as_deref(), Some("unreachable"));
    assert_eq!(
        attempt.kpis["steps"],
        KpiStats {
            count: 2,
            sum: 3.0,
            min: 1.0,
            max: 2.0,
            last: 2.0
        }
    );
    let latest = progress.latest().unwrap();
    assert_eq!((latest.done, latest.message.as_str()), (0.5, "halfway"));
}

#[tokio::test]
async fn attack_telemetry_unknown_fabric_import_is_invalid() {
    let attempt = run_fixture("telemetry_unknown_import", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    let error = attempt.error.as_deref().unwrap();
    assert!(error.contains("fabric::steal"), "{error}");
    assert_eq!(attempt.usage.fuel_consumed, 0);
    assert!(attempt.kpis.is_empty());
}

#[tokio::test]
async fn attack_telemetry_wrong_signature_of_kpi_is_invalid() {
    let attempt = run_fixture("telemetry_wrong_signature", tight()).await;
    assert_outcome(&attempt, Outcome::Invalid);
    let error = attempt.error.as_deref().unwrap();
    assert!(error.contains("fabric::kpi"), "{error}");
    assert_eq!(attempt.usage.fuel_consumed, 0);
    assert_serves(sandbox()).await;
}
