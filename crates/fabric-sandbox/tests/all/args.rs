//! Command-line arguments: the guest sees `["agent", args...]`, and arguments over the
//! bounds of `fabric_types::check_args` make the attempt `invalid` before anything runs.

use fabric_sandbox::RunRequest;
use fabric_types::{MAX_ARGS, MAX_ARGS_BYTES, Outcome};

use crate::util::*;

fn request(args: Vec<String>) -> RunRequest {
    RunRequest {
        args,
        limits: tight(),
        ..RunRequest::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn the_guest_sees_its_arguments_on_both_abis() {
    let args = strings(&["--print-args", "two words", "ünïcode", "", "--x=1"]);
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::REPORTER),
        ("p2", fabric_agents::p2::REPORTER),
    ] {
        let attempt = run_request(wasm, request(args.clone())).await;
        assert_outcome(&attempt, Outcome::Ok);
        let output = text(&attempt.output);
        assert_eq!(
            output.lines().next(),
            Some(r#"args=["--print-args", "two words", "ünïcode", "", "--x=1"]"#),
            "{kind}: {output}"
        );
    }
}

#[tokio::test]
async fn the_program_name_is_agent_and_the_arguments_follow_it() {
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::PROBE),
        ("p2", fabric_agents::p2::PROBE),
    ] {
        let request = RunRequest {
            input: b"args\n".to_vec(),
            ..request(strings(&["one", "two"]))
        };
        let attempt = run_request(wasm, request).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(
            text(&attempt.output),
            "args -> ok: 3 args: [\"agent\", \"one\", \"two\"]\n",
            "{kind}"
        );
    }
}

#[tokio::test]
async fn arguments_over_the_bounds_are_invalid_and_run_nothing() {
    let too_many = vec!["x".to_owned(); MAX_ARGS + 1];
    let too_long = vec!["y".repeat(MAX_ARGS_BYTES + 1)];
    let nul = strings(&["fine", "nul\0inside"]);
    for (what, args, says) in [
        ("too many", too_many, "257 arguments"),
        ("too many bytes", too_long, "65537 bytes"),
        ("a NUL byte", nul, "argument 1 contains a NUL byte"),
    ] {
        for wasm in [fabric_agents::p1::REPORTER, fabric_agents::p2::REPORTER] {
            let attempt = run_request(wasm, request(args.clone())).await;
            assert_outcome(&attempt, Outcome::Invalid);
            let error = attempt.error.as_deref().unwrap_or_default();
            assert!(
                error.starts_with("args: ") && error.contains(says),
                "{what}: {error}"
            );
            assert_eq!(attempt.usage.fuel_consumed, 0, "{what}");
            assert!(attempt.output.is_empty(), "{what}");
        }
    }
    let at_the_bounds = vec!["z".to_owned(); MAX_ARGS];
    let attempt = run_request(fabric_agents::p1::REPORTER, request(at_the_bounds)).await;
    assert_outcome(&attempt, Outcome::Ok);
}
