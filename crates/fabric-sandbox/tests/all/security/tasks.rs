//! Child tasks: floods of submit calls, specs too large one by one and together, bad
//! pointers, lengths and id buffers, specs that are not JSON or not a `TaskSpec`, submits
//! without the grant or past the depth limit, and host functions with other types. Every
//! refused call answers its code (or message) and the attempt goes on; nothing refused is
//! ever returned as a child.

use fabric_sandbox::{MAX_SPEC_BYTES, MAX_SPEC_BYTES_PER_ATTEMPT, SUBMIT_CALL_FUEL, SubmitRefusal};
use fabric_types::Outcome;
use fabric_types::workflow::{MAX_CHILDREN_PER_ATTEMPT, MAX_TASK_DEPTH};

use crate::util::*;

fn planners() -> [(&'static str, &'static [u8]); 2] {
    [
        ("p1", fabric_agents::p1::PLANNER),
        ("p2", fabric_agents::p2::PLANNER),
    ]
}

/// What the SDK's `Refused` prints for `refusal` from a `kind` guest.
fn refused(kind: &str, refusal: &SubmitRefusal, reason: &str) -> String {
    match kind {
        "p1" => format!("refused by the host (code {}: {reason})", refusal.code()),
        _ => format!("refused by the host: {refusal}"),
    }
}

#[tokio::test]
async fn attack_submit_flood_of_a_million_calls_is_cut_at_the_limit() {
    let wasm = fabric_agents::fixture("submit_flood");
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), tight()).await;
    assert_outcome(&ran.attempt, Outcome::Ok);
    assert_eq!(MAX_CHILDREN_PER_ATTEMPT, 1_000);
    assert_eq!(SubmitRefusal::TooManyChildren.code(), -3);
    assert_eq!(
        text(&ran.attempt.output),
        format!(
            "taken={MAX_CHILDREN_PER_ATTEMPT} refused={} other=0\n",
            1_000_000 - MAX_CHILDREN_PER_ATTEMPT
        )
    );
    assert_eq!(ids(&ran.children), first_ids(MAX_CHILDREN_PER_ATTEMPT));
    // Every call, refused or taken, burned its fuel.
    assert!(ran.attempt.usage.fuel_consumed >= 1_000_000 * SUBMIT_CALL_FUEL);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_flood_runs_out_of_fuel_when_it_cannot_pay() {
    // Fuel for about 500 calls: the flood ends `out_of_fuel`, its children coming back
    // for the caller to drop.
    let limits = fabric_types::Limits {
        fuel: 500 * SUBMIT_CALL_FUEL,
        ..tight()
    };
    let wasm = fabric_agents::fixture("submit_flood");
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), limits).await;
    assert_outcome(&ran.attempt, Outcome::OutOfFuel);
    assert!(
        (250..=500).contains(&ran.children.len()),
        "{}",
        ran.children.len()
    );
    assert!(ran.attempt.output.is_empty());
}

#[tokio::test]
async fn attack_submit_flood_past_1000_from_both_abis_is_cut_at_the_limit() {
    for (kind, wasm) in planners() {
        let ran = run_tasks(wasm, b"", &["--flood", "1500"], Some(grant(0)), tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        let last = refused(
            kind,
            &SubmitRefusal::TooManyChildren,
            "too many child tasks",
        );
        assert_eq!(
            text(&ran.attempt.output),
            format!("flood calls=1500 taken=1000 refused=500\nlast refusal: {last}\n"),
            "{kind}"
        );
        assert_eq!(ids(&ran.children), first_ids(1_000), "{kind}");
        assert_eq!(
            ran.children[999].spec.input.as_deref(),
            Some("flood 999"),
            "{kind}"
        );
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_bad_arguments_are_refused_and_the_attempt_goes_on() {
    let wasm = fabric_agents::fixture("submit_bad_calls");
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), tight()).await;
    assert_outcome(&ran.attempt, Outcome::Ok);
    let expected = [
        ("spec_across_the_end", -4),
        ("spec_negative_pointer", -4),
        ("spec_huge_length", -4),
        ("id_across_the_end", -4),
        ("id_negative_pointer", -4),
        ("id_huge_capacity", -4),
        ("spec_of_256_kib_and_1", -5),
        ("spec_not_utf8", -7),
        ("spec_not_json", -8),
        ("spec_unknown_field", -8),
        ("spec_without_module", -8),
        ("spec_nested_100000_deep", -8),
        ("spec_refused_by_the_host", -9),
        ("id_buffer_of_4", -10),
        ("id_buffer_empty", -10),
        ("spec_ok", 11),
        ("spec_ok_exact_buffer", 11),
    ];
    assert_eq!(SubmitRefusal::BadPointer.code(), -4);
    assert_eq!(SubmitRefusal::SpecTooLarge.code(), -5);
    assert_eq!(SubmitRefusal::NotUtf8.code(), -7);
    assert_eq!(SubmitRefusal::IdBufferTooSmall.code(), -10);
    let mut want: String = expected
        .iter()
        .map(|(label, code)| format!("{label}={code}\n"))
        .collect();
    // The two refused for their id buffers were minted ids 1 and 2, never handed out.
    want.push_str("id=child-00003\nid=child-00004\n");
    assert_eq!(text(&ran.attempt.output), want);
    assert_eq!(ids(&ran.children), ["child-00003", "child-00004"]);
    assert!(ran.children.iter().all(|child| child.spec.module == "echo"));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_spec_bytes_are_bounded_per_attempt() {
    assert_eq!(MAX_SPEC_BYTES, 256 << 10);
    assert_eq!(MAX_SPEC_BYTES_PER_ATTEMPT, 16 * MAX_SPEC_BYTES);
    let wasm = fabric_agents::fixture("submit_spec_bytes");
    let limits = fabric_types::Limits {
        memory_bytes: 64 << 20,
        ..tight()
    };
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), limits).await;
    assert_outcome(&ran.attempt, Outcome::Ok);
    let mut want = "11\n".repeat(16);
    want.push_str("-6\n-6\n");
    assert_eq!(text(&ran.attempt.output), want);
    assert_eq!(ids(&ran.children), first_ids(16));
    let input = ran.children[15].spec.input.as_deref().unwrap();
    assert_eq!(input.len(), MAX_SPEC_BYTES - 28);
    assert!(input.bytes().all(|b| b == b'a'));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_malformed_giant_and_refused_specs_from_both_abis() {
    let giant = format!(
        r#"{{"module":"echo","input":"{}"}}"#,
        "a".repeat(MAX_SPEC_BYTES + 1 - 28)
    );
    assert_eq!(giant.len(), MAX_SPEC_BYTES + 1);
    let deep = format!(r#"{{"module":"echo","labels":{}"#, "[".repeat(100_000));
    let lines = [
        r#"{"module":"echo","inptu":"x"}"#,
        "not json",
        r#"{"input":"x"}"#,
        r#"{"module":"echo","limits":{"fuel":-1}}"#,
        &deep,
        &giant,
        r#"{"module":"forbidden"}"#,
        r#"{"module":"echo"}"#,
    ];
    for (kind, wasm) in planners() {
        let input = lines.join("\n");
        let ran = run_tasks(wasm, input.as_bytes(), &["--raw"], Some(grant(0)), tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        let answers: Vec<String> = text(&ran.attempt.output)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(answers.len(), lines.len(), "{kind}: {answers:?}");
        let malformed = refused(
            kind,
            &SubmitRefusal::Malformed(String::new()),
            "malformed spec",
        );
        let too_large = refused(kind, &SubmitRefusal::SpecTooLarge, "spec too large");
        if kind == "p1" {
            // Core modules get the code alone.
            let host = refused(
                kind,
                &SubmitRefusal::Refused(String::new()),
                "spec refused by the host",
            );
            let want = [
                &malformed, &malformed, &malformed, &malformed, &malformed, &too_large, &host,
            ];
            for (answer, want) in answers.iter().zip(want) {
                assert_eq!(*answer, format!("refused: {want}"), "{kind}");
            }
        } else {
            // Components get the reason too.
            let starts = [
                "refused: refused by the host: malformed spec: unknown field `inptu`, expected one of `module`",
                "refused: refused by the host: malformed spec: expected ident at line 1 column 2",
                "refused: refused by the host: malformed spec: missing field `module`",
                "refused: refused by the host: malformed spec: invalid value: integer `-1`",
                "refused: refused by the host: malformed spec: invalid type: sequence, expected a map",
            ];
            for (answer, start) in answers.iter().zip(starts) {
                assert!(answer.starts_with(start), "{kind}: {answer}");
            }
            assert_eq!(answers[5], format!("refused: {too_large}"), "{kind}");
            assert_eq!(
                answers[6],
                "refused: refused by the host: refused: module \"forbidden\" is not allowed here",
                "{kind}"
            );
        }
        assert_eq!(answers[7], "ok child-00001", "{kind}");
        assert_eq!(ids(&ran.children), ["child-00001"], "{kind}");
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_without_the_grant_is_refused() {
    for (kind, wasm) in planners() {
        let ran = run_tasks(wasm, b"", &["--flood", "3"], None, tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        let last = refused(kind, &SubmitRefusal::NotGranted, "child tasks not granted");
        assert_eq!(
            text(&ran.attempt.output),
            format!("flood calls=3 taken=0 refused=3\nlast refusal: {last}\n"),
            "{kind}"
        );
        assert!(ran.children.is_empty(), "{kind}");
        // The planner's own flow fails at its first child: no grant, no plan.
        let ran = run_tasks(wasm, b"one line\n", &[], None, tight()).await;
        assert_outcome(&ran.attempt, Outcome::Exit);
        let stderr = text(&ran.attempt.stderr);
        assert!(
            stderr.contains(&format!("submitting child 0: {last}")),
            "{kind}: {stderr}"
        );
        assert!(ran.children.is_empty(), "{kind}");
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_submit_at_the_depth_limit_is_refused() {
    assert_eq!(MAX_TASK_DEPTH, 16);
    for (kind, wasm) in planners() {
        let ran = run_tasks(
            wasm,
            b"",
            &["--flood", "2"],
            Some(grant(MAX_TASK_DEPTH)),
            tight(),
        )
        .await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        let last = refused(kind, &SubmitRefusal::TooDeep, "too deep for child tasks");
        assert_eq!(
            text(&ran.attempt.output),
            format!("flood calls=2 taken=0 refused=2\nlast refusal: {last}\n"),
            "{kind}"
        );
        assert!(ran.children.is_empty(), "{kind}");
        // One level up, a task's children (at depth 16) are accepted.
        let ran = run_tasks(
            wasm,
            b"",
            &["--flood", "2"],
            Some(grant(MAX_TASK_DEPTH - 1)),
            tight(),
        )
        .await;
        assert_eq!(
            text(&ran.attempt.output),
            "flood calls=2 taken=2 refused=0\n",
            "{kind}"
        );
        assert_eq!(ran.children.len(), 2, "{kind}");
    }
}

#[tokio::test]
async fn attack_submit_then_trap_returns_the_children_for_the_caller_to_drop() {
    let wasm = fabric_agents::fixture("submit_then_trap");
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), tight()).await;
    assert_outcome(&ran.attempt, Outcome::Trap);
    assert_eq!(ran.attempt.trap.as_deref(), Some("unreachable"));
    assert_eq!(ids(&ran.children), first_ids(2));
    let inputs: Vec<_> = ran
        .children
        .iter()
        .map(|child| child.spec.input.as_deref().unwrap())
        .collect();
    assert_eq!(inputs, ["one", "two"]);
}

#[tokio::test]
async fn attack_submit_wrong_signature_is_invalid() {
    let wasm = fabric_agents::fixture("submit_wrong_signature");
    let ran = run_tasks(&wasm, b"", &[], Some(grant(0)), tight()).await;
    assert_outcome(&ran.attempt, Outcome::Invalid);
    let error = ran.attempt.error.as_deref().unwrap();
    assert!(error.contains("fabric::submit"), "{error}");
    assert_eq!(ran.attempt.usage.fuel_consumed, 0);
    assert!(ran.children.is_empty());
    assert_serves(sandbox()).await;
}
