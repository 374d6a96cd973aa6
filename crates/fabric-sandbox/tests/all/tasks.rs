//! Child tasks of well-behaved agents: children submitted through the SDK on core modules
//! and components alike, accepted in order with the ids the host minted and returned with
//! the attempt; the planner's joiner.

use fabric_sandbox::SUBMIT_CALL_FUEL;
use fabric_types::Outcome;
use fabric_types::wire::TaskSpec;

use crate::util::*;

fn planners() -> [(&'static str, &'static [u8]); 2] {
    [
        ("p1", fabric_agents::p1::PLANNER),
        ("p2", fabric_agents::p2::PLANNER),
    ]
}

#[tokio::test]
async fn children_come_back_in_order_with_their_ids_on_both_abis() {
    for (kind, wasm) in planners() {
        let ran = run_tasks(wasm, b"", &["--flood", "3"], Some(grant(0)), tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        assert_eq!(
            text(&ran.attempt.output),
            "flood calls=3 taken=3 refused=0\n",
            "{kind}"
        );
        assert_eq!(ids(&ran.children), first_ids(3), "{kind}");
        for (i, child) in ran.children.iter().enumerate() {
            let expected = TaskSpec {
                module: "wordcount".into(),
                input: Some(format!("flood {i}")),
                ..TaskSpec::default()
            };
            assert_eq!(child.spec, expected, "{kind}");
        }
    }
}

#[tokio::test]
async fn raw_specs_come_back_as_the_guest_wrote_them() {
    let spec =
        r#"{"module":"sha256","input":"x","priority":"high","labels":{"team":"a"},"args":["-v"]}"#;
    for (kind, wasm) in planners() {
        let ran = run_tasks(wasm, spec.as_bytes(), &["--raw"], Some(grant(3)), tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        assert_eq!(text(&ran.attempt.output), "ok child-00001\n", "{kind}");
        let expected: TaskSpec = serde_json::from_str(spec).unwrap();
        assert_eq!(ran.children.len(), 1, "{kind}");
        assert_eq!(ran.children[0].spec, expected, "{kind}");
    }
}

#[tokio::test]
async fn run_without_children_still_runs_a_granted_attempt() {
    // `Sandbox::run` is `run_with_children` without the children.
    let agent = load(fabric_agents::p1::PLANNER);
    let request = fabric_sandbox::RunRequest {
        args: vec!["--flood".into(), "2".into()],
        limits: tight(),
        tasks: Some(grant(0)),
        ..Default::default()
    };
    let attempt = sandbox()
        .run(&agent, request, &fabric_sandbox::CancelToken::new())
        .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(text(&attempt.output), "flood calls=2 taken=2 refused=0\n");
}

#[tokio::test]
async fn submit_calls_cost_fuel() {
    for (kind, wasm) in planners() {
        let quiet = run_tasks(wasm, b"", &["--flood", "0"], Some(grant(0)), tight()).await;
        let busy = run_tasks(wasm, b"", &["--flood", "200"], Some(grant(0)), tight()).await;
        assert_outcome(&busy.attempt, Outcome::Ok);
        assert_eq!(busy.children.len(), 200, "{kind}");
        let extra = busy.attempt.usage.fuel_consumed - quiet.attempt.usage.fuel_consumed;
        assert!(extra >= 200 * SUBMIT_CALL_FUEL, "{kind}: {extra}");
    }
}

#[tokio::test]
async fn the_joiner_sums_the_wordcount_reports_it_is_passed() {
    let document = r#"{"input":"","after":[
        {"id":"A","state":"succeeded","output":"{\"words\":2,\"lines\":1,\"bytes\":10,\"top\":[]}\n"},
        {"id":"B","state":"succeeded","output":"{\"words\":3,\"lines\":2,\"bytes\":14,\"top\":[]}\n"}]}"#;
    for (kind, wasm) in planners() {
        let ran = run_tasks(wasm, document.as_bytes(), &["--join"], None, tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        assert_eq!(
            text(&ran.attempt.output),
            "{\"texts\":2,\"words\":5,\"lines\":3,\"bytes\":24}\n",
            "{kind}"
        );
        assert!(ran.children.is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn an_agent_that_submits_nothing_returns_no_children() {
    let ran = run_tasks(fabric_agents::p1::ECHO, b"hi", &[], Some(grant(0)), tight()).await;
    assert_outcome(&ran.attempt, Outcome::Ok);
    assert!(ran.children.is_empty());
}

#[tokio::test]
async fn the_planner_fans_out_and_submits_its_fan_in_after_every_child_on_both_abis() {
    for (kind, wasm) in planners() {
        let input = b"the cat\n\nsaw the dog\nthe end\n";
        let ran = run_tasks(wasm, input, &[], Some(grant(0)), tight()).await;
        assert_outcome(&ran.attempt, Outcome::Ok);
        let ids = first_ids(4);
        assert_eq!(
            text(&ran.attempt.output),
            format!(
                "{{\"children\":[\"{}\",\"{}\",\"{}\"],\"join\":\"{}\"}}\n",
                ids[0], ids[1], ids[2], ids[3]
            ),
            "{kind}"
        );
        let inputs: Vec<_> = ran.children[..3]
            .iter()
            .map(|child| (child.spec.module.as_str(), child.spec.input.as_deref()))
            .collect();
        assert_eq!(
            inputs,
            [
                ("wordcount", Some("the cat")),
                ("wordcount", Some("saw the dog")),
                ("wordcount", Some("the end"))
            ],
            "{kind}"
        );
        let fan_in = &ran.children[3].spec;
        assert_eq!(
            (fan_in.module.as_str(), fan_in.args.as_slice()),
            ("planner", ["--join".to_string()].as_slice()),
            "{kind}"
        );
        assert_eq!(fan_in.after, ids[..3], "{kind}");
        assert!(fan_in.pass_outputs, "{kind}");
    }
}
