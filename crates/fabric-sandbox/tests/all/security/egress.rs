//! Egress: a component reaches exactly what its policies allow, over the addresses the
//! policy lets names resolve to, with the policy's headers and within its bounds; every
//! trick to reach something else is denied, metered and recorded, and the sandbox goes on
//! serving.

use std::sync::Arc;
use std::time::Duration;

use fabric_agents::peer::Peer;
use fabric_sandbox::{CancelToken, EgressGrant, EgressPolicy, RunRequest};
use fabric_types::{Attempt, Limits, Outcome};

use crate::util::*;

fn policy(name: &str, rules: &[String]) -> EgressPolicy {
    EgressPolicy::new(name, rules).expect("a valid policy")
}

/// Runs the fetch agent on `lines` under `policies`, for task `seed`.
async fn fetch_as(seed: &str, lines: &str, policies: Vec<EgressPolicy>, limits: Limits) -> Attempt {
    let agent = load(fabric_agents::p2::FETCH);
    let request = RunRequest {
        input: lines.as_bytes().to_vec(),
        limits,
        egress: EgressGrant {
            policies: policies.into_iter().map(Arc::new).collect(),
            key_seed: seed.into(),
            calls: None,
        },
        ..RunRequest::default()
    };
    sandbox().run(&agent, request, &CancelToken::new()).await
}

async fn fetch(lines: &str, policies: Vec<EgressPolicy>) -> Attempt {
    fetch_as("task-1", lines, policies, tight()).await
}

/// The agent's answer to each line, without the line itself.
fn answers(attempt: &Attempt) -> Vec<String> {
    text(&attempt.output)
        .lines()
        .map(|l| l.split_once(" -> ").map_or(l, |(_, a)| a).to_string())
        .collect()
}

/// A policy allowing exactly this peer.
fn allow(peer: &Peer) -> EgressPolicy {
    policy("peer", &[peer.url()])
}

#[tokio::test]
async fn egress_an_allowed_request_reaches_its_peer_and_is_metered() {
    let peer = Peer::start();
    let attempt = fetch(&format!("GET {}/hello", peer.url()), vec![allow(&peer)]).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(answers(&attempt), ["200, 5 bytes: hello"]);
    assert_eq!(attempt.usage.http_requests, 1);
    assert_eq!(attempt.usage.http_bytes_received, 5);
    assert_eq!(attempt.usage.http_denied, 0);
    assert!(attempt.denials.is_empty());
    let received = peer.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].head.starts_with("GET /hello HTTP/1.1"),
        "{}",
        received[0].head
    );
    assert_eq!(
        received[0].header("host").as_deref(),
        Some(peer.addr.to_string().as_str())
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn egress_idempotency_keys_are_stable_per_task_and_request_number() {
    let peer = Peer::start();
    let lines = format!("GET {0}/hello\nGET {0}/hello", peer.url());
    for seed in ["task-a", "task-a", "task-b"] {
        let attempt = fetch_as(seed, &lines, vec![allow(&peer)], tight()).await;
        assert_outcome(&attempt, Outcome::Ok);
    }
    let keys: Vec<String> = peer
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").expect("an idempotency key"))
        .collect();
    assert_eq!(keys.len(), 6);
    assert!(
        keys.iter()
            .all(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert_eq!(
        keys[0], keys[2],
        "the same task's first request, on a second attempt"
    );
    assert_eq!(keys[1], keys[3]);
    assert_ne!(keys[0], keys[1], "a task's requests differ");
    assert_ne!(keys[0], keys[4], "tasks differ");
    // A guest's own key is kept.
    let attempt = fetch(
        &format!("GET {}/hello h:idempotency-key=mine", peer.url()),
        vec![allow(&peer)],
    )
    .await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(
        peer.received()[6].header("idempotency-key").as_deref(),
        Some("mine")
    );
}

#[tokio::test]
async fn attack_egress_without_a_grant_every_request_is_denied() {
    let peer = Peer::start();
    let attempt = fetch(&format!("GET {}/hello", peer.url()), vec![]).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(answers(&attempt), ["err: HttpRequestDenied"]);
    assert_eq!(attempt.usage.http_denied, 1);
    assert_eq!(attempt.usage.http_requests, 0);
    assert_eq!(attempt.denials[0].url, format!("{}/hello", peer.url()));
    assert_eq!(
        attempt.denials[0].reason,
        "this attempt was granted no egress"
    );
    assert!(peer.received().is_empty());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_a_name_resolving_to_loopback_is_denied_unless_private() {
    let peer = Peer::start();
    let port = peer.addr.port();
    let rule = format!("http://localhost:{port}");
    let line = format!("GET http://localhost:{port}/hello");
    let attempt = fetch(&line, vec![policy("local", std::slice::from_ref(&rule))]).await;
    assert_eq!(answers(&attempt), ["err: HttpRequestDenied"]);
    let reason = &attempt.denials[0].reason;
    assert!(
        reason.contains("localhost resolves only to non-public addresses")
            && reason.contains("loopback"),
        "{reason}"
    );
    assert!(peer.received().is_empty());

    let mut private = policy("local", &[rule]);
    private.private = true;
    let attempt = fetch(&line, vec![private]).await;
    assert_eq!(answers(&attempt), ["200, 5 bytes: hello"]);
    assert_eq!(peer.received().len(), 1);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_numeric_ipv4_spellings_of_loopback_are_denied() {
    let peer = Peer::start();
    let port = peer.addr.port();
    let lines: Vec<String> = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1"]
        .iter()
        .map(|host| format!("GET http://{host}:{port}/hello"))
        .collect();
    let attempt = fetch(&lines.join("\n"), vec![allow(&peer)]).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(answers(&attempt), vec!["err: HttpRequestDenied"; 5]);
    assert_eq!(attempt.usage.http_denied, 5);
    for denial in &attempt.denials {
        assert!(denial.reason.contains("is not a host name"), "{denial:?}");
    }
    assert!(peer.received().is_empty());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_ipv4_mapped_ipv6_forms_do_not_match_an_ipv4_rule() {
    let peer = Peer::start();
    let port = peer.addr.port();
    let lines = format!(
        "GET http://[::ffff:127.0.0.1]:{port}/hello\nGET http://[::ffff:7f00:1]:{port}/hello\nGET http://[::127.0.0.1]:{port}/hello"
    );
    let attempt = fetch(&lines, vec![allow(&peer)]).await;
    assert_eq!(answers(&attempt), vec!["err: HttpRequestDenied"; 3]);
    assert!(
        attempt.denials[0]
            .reason
            .starts_with("no egress policy of this attempt allows")
    );
    assert!(peer.received().is_empty());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_userinfo_in_the_authority_is_denied() {
    let peer = Peer::start();
    let addr = peer.addr;
    let lines = format!(
        "GET http://{addr}@evil.example/hello\nGET http://evil.example@{addr}/hello\nGET http://user:pass@{addr}/hello"
    );
    let attempt = fetch(&lines, vec![allow(&peer)]).await;
    assert_eq!(answers(&attempt), vec!["err: HttpRequestDenied"; 3]);
    for denial in &attempt.denials {
        assert!(denial.reason.contains("carries a user name"), "{denial:?}");
    }
    assert!(peer.received().is_empty());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_scheme_and_port_must_match_the_rule() {
    let peer = Peer::start();
    let other = Peer::start();
    let lines = format!(
        "GET https://{}/hello\nGET {}/hello\nGET http://127.0.0.1/hello",
        peer.addr,
        other.url()
    );
    let attempt = fetch(&lines, vec![allow(&peer)]).await;
    assert_eq!(answers(&attempt), vec!["err: HttpRequestDenied"; 3]);
    assert_eq!(attempt.usage.http_requests, 0);
    assert!(peer.received().is_empty() && other.received().is_empty());
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_cr_lf_cannot_inject_headers_or_requests() {
    let peer = Peer::start();
    let url = peer.url();
    let lines = format!(
        "GET {url}/hello h:x-a=ok%0d%0ainjected:%20yes\n\
         GET {url}/hello h:x-a%0d%0ainjected=yes\n\
         GET {url}/hello%20HTTP/1.1%0d%0ainjected:%20yes%0d%0a%0d%0aGET%20/hello\n\
         GET {url}/headers"
    );
    let attempt = fetch(&lines, vec![allow(&peer)]).await;
    assert_outcome(&attempt, Outcome::Ok);
    let answers = answers(&attempt);
    assert!(
        answers[0].starts_with("err: header \"x-a\" refused"),
        "{answers:?}"
    );
    assert!(
        answers[1].starts_with("err: header \"x-a\\r\\ninjected\" refused"),
        "{answers:?}"
    );
    assert_eq!(answers[2], "err: the path is refused");
    assert!(answers[3].starts_with("200,"), "{answers:?}");
    let received = peer.received();
    assert_eq!(received.len(), 1, "only the clean request went out");
    assert!(!received[0].head.to_ascii_lowercase().contains("injected"));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_a_policys_secret_headers_go_only_to_its_own_hosts() {
    let (a, b) = (Peer::start(), Peer::start());
    let secret = policy("a", &[a.url()])
        .header("authorization", "Bearer SECRET-A")
        .unwrap();
    let lines = format!(
        "GET {}/hello h:authorization=guest-value\nGET {}/hello h:authorization=guest-value\nGET {}/hello",
        a.url(),
        b.url(),
        b.url()
    );
    let attempt = fetch(&lines, vec![secret, policy("b", &[b.url()])]).await;
    assert_eq!(answers(&attempt), vec!["200, 5 bytes: hello"; 3]);
    let to_a = &a.received()[0];
    assert_eq!(
        to_a.header("authorization").as_deref(),
        Some("Bearer SECRET-A")
    );
    assert_eq!(
        to_a.head.matches("authorization").count() + to_a.head.matches("Authorization").count(),
        1,
        "the guest's header is replaced, not merged: {}",
        to_a.head
    );
    for to_b in b.received() {
        assert!(!to_b.head.contains("SECRET-A"), "{}", to_b.head);
    }
    assert_eq!(
        b.received()[0].header("authorization").as_deref(),
        Some("guest-value")
    );
    assert!(
        !serde_json::to_string(&attempt)
            .unwrap()
            .contains("SECRET-A")
    );
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_huge_responses_stop_at_max_response_bytes() {
    let peer = Peer::start();
    let mut bounded = allow(&peer);
    bounded.max_response_bytes = 64 << 10;
    let lines = format!(
        "GET {0}/bytes/10000000 show:0\nGET {0}/chunked/10000000 show:0\nGET {0}/bytes/65536 show:0",
        peer.url()
    );
    let attempt = fetch(&lines, vec![bounded]).await;
    assert_outcome(&attempt, Outcome::Ok);
    let answers = answers(&attempt);
    assert_eq!(
        answers[0], "err: HttpResponseBodySize(Some(65536))",
        "announced too big"
    );
    // wasmtime-wasi-http 48 hands body errors to the guest as a stream error whose
    // `http-error-code` is none: the guest sees the host's message.
    let (head, tail) = answers[1].split_once(" then err: ").expect("cut mid-body");
    assert_eq!(tail, "HTTP response body size exceeds limit: 65536 bytes");
    let got: u64 = head
        .trim_start_matches("200, ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(got <= 64 << 10, "the guest got {got} bytes");
    assert_eq!(answers[2], "200, 65536 bytes: ", "exactly the bound passes");
    assert!(attempt.usage.http_bytes_received <= (64 << 10) * 2 + (32 << 10));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_an_endless_response_ends_at_the_bound() {
    let peer = Peer::start();
    let mut bounded = allow(&peer);
    bounded.max_response_bytes = 1 << 20;
    let attempt = fetch(&format!("GET {}/endless show:0", peer.url()), vec![bounded]).await;
    assert_outcome(&attempt, Outcome::Ok);
    assert!(
        answers(&attempt)[0]
            .ends_with("then err: HTTP response body size exceeds limit: 1048576 bytes"),
        "{:?}",
        answers(&attempt)
    );
    assert!(attempt.usage.http_bytes_received < (1 << 20) + (64 << 10));
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_a_peer_that_never_answers_ends_the_attempt_on_time() {
    let peer = Peer::start();
    let limits = Limits {
        timeout_ms: 1_000,
        ..tight()
    };
    load(fabric_agents::p2::FETCH); // compiled before the clock starts
    for path in ["silent", "slow-body"] {
        let started = std::time::Instant::now();
        let attempt = fetch_as(
            "t",
            &format!("GET {}/{path}", peer.url()),
            vec![allow(&peer)],
            limits,
        )
        .await;
        assert_outcome(&attempt, Outcome::Timeout);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_300), "{path}: {took:?}");
        assert_eq!(attempt.usage.http_requests, 1);
    }
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_requests_past_max_requests_are_denied() {
    let peer = Peer::start();
    let mut bounded = allow(&peer);
    bounded.max_requests = 3;
    let lines = vec![format!("GET {}/hello", peer.url()); 5].join("\n");
    let attempt = fetch(&lines, vec![bounded]).await;
    let mut expected = vec!["200, 5 bytes: hello"; 3];
    expected.extend(["err: HttpRequestDenied"; 2]);
    assert_eq!(answers(&attempt), expected);
    assert_eq!(
        (attempt.usage.http_requests, attempt.usage.http_denied),
        (3, 2)
    );
    assert_eq!(
        attempt.denials[0].reason,
        "egress policy \"peer\" allows 3 requests per attempt, all made"
    );
    assert_eq!(peer.received().len(), 3);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_thousands_of_requests_cost_one_policy_bound() {
    let peer = Peer::start();
    let lines = vec![format!("GET {}/hello", peer.url()); 3_000].join("\n");
    let limits = Limits {
        timeout_ms: 20_000,
        ..tight()
    };
    let attempt = fetch_as("t", &lines, vec![allow(&peer)], limits).await;
    assert_outcome(&attempt, Outcome::Ok);
    let max = fabric_sandbox::DEFAULT_MAX_REQUESTS as u64;
    assert_eq!(attempt.usage.http_requests, max);
    assert_eq!(attempt.usage.http_denied, 3_000 - max);
    assert_eq!(attempt.denials.len(), fabric_sandbox::MAX_RECORDED_DENIALS);
    assert_eq!(peer.received().len() as u64, max);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_a_redirect_to_the_metadata_address_is_checked_again_and_denied() {
    let peer = Peer::start();
    let lines = format!(
        "GET {0}/redirect?http://169.254.169.254/latest/meta-data/ follow\n\
         GET {0}/redirect?http://[fd00:ec2::254]/latest/ follow\n\
         GET {0}/redirect?{0}/hello follow",
        peer.url()
    );
    let attempt = fetch(&lines, vec![allow(&peer)]).await;
    assert_eq!(
        answers(&attempt),
        [
            "err: HttpRequestDenied",
            "err: HttpRequestDenied",
            "200, 5 bytes: hello"
        ]
    );
    assert_eq!(
        attempt.denials[0].url,
        "http://169.254.169.254/latest/meta-data/"
    );
    assert_eq!(attempt.denials[1].url, "http://[fd00:ec2::254]/latest/");
    assert_eq!(attempt.usage.http_requests, 4);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_request_bodies_stop_at_max_request_bytes() {
    let peer = Peer::start();
    let mut bounded = allow(&peer);
    bounded.max_request_bytes = 10_000;
    let lines = format!(
        "POST {0}/hello bytes:1000000\nPOST {0}/hello bytes:10000",
        peer.url()
    );
    let attempt = fetch(&lines, vec![bounded]).await;
    assert_outcome(&attempt, Outcome::Ok);
    let answers = answers(&attempt);
    assert!(answers[0].starts_with("err:"), "{answers:?}");
    assert_eq!(answers[1], "200, 5 bytes: hello");
    assert!(
        attempt.usage.http_bytes_sent <= 10_000 + 10_000 + 4_096,
        "{:?}",
        attempt.usage
    );
    let received = peer.received();
    assert_eq!(received.last().unwrap().body_bytes, 10_000);
    assert_serves(sandbox()).await;
}

#[tokio::test]
async fn attack_egress_wildcards_and_lookalike_names_do_not_widen_a_rule() {
    let peer = Peer::start();
    let port = peer.addr.port();
    let mut wide = policy("wide", &[format!("http://*.localhost:{port}")]);
    wide.private = true;
    let lines = format!(
        "GET http://localhost:{port}/hello\nGET http://evillocalhost:{port}/hello\nGET http://localhost.:{port}/x%2f..%2fhello"
    );
    let attempt = fetch(&lines, vec![wide]).await;
    assert_eq!(answers(&attempt), vec!["err: HttpRequestDenied"; 3]);
    assert!(peer.received().is_empty());
    assert_serves(sandbox()).await;
}
