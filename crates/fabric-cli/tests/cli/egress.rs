//! Egress through the server: `[[egress]]` policies in `--config`, tasks naming them in
//! `egress`, the fetch agent calling a loopback peer. Secrets reach the peer and never the
//! task record; usage and denials are stored with the attempt; metrics count the traffic;
//! a task may name only the policies its tenant may use. After every attack the server
//! still runs an ordinary task.

use std::time::Duration;

use fabric_agents::peer::Peer;
use serde_json::{Value, json};

use crate::server::{Client, Fabric};
use crate::util::{Workdir, fabric, stderr};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "Bearer SERVER-SIDE-SECRET";

/// A config file with two policies: `peer` (the peer, with the secret header and at most 3
/// requests per attempt) and `other` (another peer, no headers).
fn config(dir: &Workdir, peer: &Peer, other: &Peer) -> String {
    let text = format!(
        r#"
[[egress]]
name = "peer"
allow = ["{}"]
headers = {{ authorization = "{SECRET}" }}
max_requests = 3
max_response_bytes = "64KiB"

[[egress]]
name = "other"
allow = ["{}"]
"#,
        peer.url(),
        other.url()
    );
    dir.file("fabric.toml", text.as_bytes())
        .display()
        .to_string()
}

/// Runs the fetch component on `lines` with `egress`, and returns the finished task.
async fn fetch(client: &Client, lines: &str, egress: &[&str]) -> Value {
    let module = client.put_module(fabric_agents::p2::FETCH, "fetch").await;
    let id = client
        .submit(json!({"module": module, "input": lines, "egress": egress}))
        .await;
    client.wait(&id, WAIT).await
}

fn answers(task: &Value) -> Vec<String> {
    task["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no text output: {task}"))
        .lines()
        .map(|l| l.split_once(" -> ").map_or(l, |(_, a)| a).to_string())
        .collect()
}

#[tokio::test]
async fn egress_a_task_reaches_its_policys_peer_with_the_secret_and_the_traffic_is_recorded() {
    let (peer, other) = (Peer::start(), Peer::start());
    let dir = Workdir::new();
    let server = Fabric::start(&["--workers", "2", "--config", &config(&dir, &peer, &other)]);
    let client = server.client();
    let lines = format!(
        "GET {}/hello\nGET {}/hello\nGET http://169.254.169.254/",
        peer.url(),
        other.url()
    );
    let task = fetch(&client, &lines, &["peer", "other"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["egress"], json!(["peer", "other"]));
    assert_eq!(
        answers(&task),
        [
            "200, 5 bytes: hello",
            "200, 5 bytes: hello",
            "err: HttpRequestDenied"
        ]
    );
    assert_eq!(
        peer.received()[0].header("authorization").as_deref(),
        Some(SECRET)
    );
    assert_eq!(
        other.received()[0].header("authorization"),
        None,
        "the secret stays with its policy"
    );
    let key = peer.received()[0].header("idempotency-key").expect("a key");
    assert_eq!(key.len(), 32);

    let attempt = &task["attempts"][0];
    assert_eq!(attempt["usage"]["http_requests"], 2, "{attempt}");
    assert_eq!(attempt["usage"]["http_bytes_received"], 10);
    assert_eq!(attempt["usage"]["http_denied"], 1);
    assert_eq!(attempt["denials"][0]["url"], "http://169.254.169.254/");
    assert_eq!(
        attempt["denials"][0]["reason"],
        "no egress policy of this attempt allows http://169.254.169.254:80"
    );
    let stored = client.call("task.get", json!({"id": task["id"]})).await;
    assert!(
        !stored.to_string().contains("SERVER-SIDE-SECRET"),
        "{stored}"
    );

    let (_, metrics) = client.get("/metrics").await;
    for line in [
        "fabric_egress_requests_total{policy=\"peer\",decision=\"answered\"} 1",
        "fabric_egress_requests_total{policy=\"other\",decision=\"answered\"} 1",
        "fabric_egress_requests_total{policy=\"none\",decision=\"denied\"} 1",
        "fabric_egress_response_duration_seconds_count{policy=\"peer\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in /metrics"
        );
    }
    client.assert_serves().await;
}

#[tokio::test]
async fn attack_egress_server_bounds_and_grants_hold_through_the_server() {
    let (peer, other) = (Peer::start(), Peer::start());
    let dir = Workdir::new();
    let server = Fabric::start(&["--workers", "2", "--config", &config(&dir, &peer, &other)]);
    let client = server.client();

    // No egress named: everything is denied, and the denial is stored.
    let task = fetch(&client, &format!("GET {}/hello", peer.url()), &[]).await;
    assert_eq!(answers(&task), ["err: HttpRequestDenied"]);
    assert_eq!(
        task["attempts"][0]["denials"][0]["reason"],
        "this attempt was granted no egress"
    );

    // The policy's bounds: 3 requests, 64 KiB per response.
    let lines = format!(
        "GET {0}/bytes/1000000 show:0\nGET {0}/hello\nGET {0}/hello\nGET {0}/hello",
        peer.url()
    );
    let task = fetch(&client, &lines, &["peer"]).await;
    assert_eq!(
        answers(&task),
        [
            "err: HttpResponseBodySize(Some(65536))",
            "200, 5 bytes: hello",
            "200, 5 bytes: hello",
            "err: HttpRequestDenied"
        ]
    );
    assert_eq!(task["attempts"][0]["usage"]["http_requests"], 3);

    // Unknown policies and too many are refused at submit, naming `egress`.
    let module = client.put_module(fabric_agents::p2::FETCH, "fetch").await;
    for egress in [
        json!(["nope"]),
        json!(["peer", "peer"]),
        json!(vec!["peer"; 17]),
    ] {
        let error = client
            .error("task.submit", json!({"module": module, "egress": egress}))
            .await;
        assert_eq!(error["code"], -32602, "{error}");
        assert_eq!(error["data"]["field"], "egress", "{error}");
    }
    client.assert_serves().await;
}

#[tokio::test]
async fn attack_egress_server_a_tenant_names_only_the_policies_its_token_lists() {
    let (peer, other) = (Peer::start(), Peer::start());
    let dir = Workdir::new();
    let config = config(&dir, &peer, &other);
    let token = |tenant: &str, secret: &str, egress: &str| {
        format!(
            "[[token]]\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n{egress}\n",
            fabric_server::token_digest(secret)
        )
    };
    let auth = [
        token("acme", "acme-token", "egress = [\"peer\"]"),
        token("beta", "beta-token", ""),
        format!(
            "[[token]]\nrole = \"admin\"\nsha256 = \"{}\"\n",
            fabric_server::token_digest("root-token")
        ),
    ]
    .concat();
    let auth = dir.file("auth.toml", auth.as_bytes()).display().to_string();
    let server = Fabric::start(&["--workers", "2", "--config", &config, "--auth", &auth]);
    let (acme, beta, admin) = (
        server.with_token("acme-token"),
        server.with_token("beta-token"),
        server.with_token("root-token"),
    );
    let task = fetch(&acme, &format!("GET {}/hello", peer.url()), &["peer"]).await;
    assert_eq!(answers(&task), ["200, 5 bytes: hello"]);
    for (client, egress) in [(&acme, "other"), (&beta, "peer"), (&beta, "other")] {
        let module = client.put_module(fabric_agents::p2::FETCH, "fetch").await;
        let error = client
            .error("task.submit", json!({"module": module, "egress": [egress]}))
            .await;
        assert_eq!(error["code"], -32602, "{error}");
        assert_eq!(error["data"]["field"], "egress", "{error}");
        assert_eq!(
            error["message"],
            format!(
                "invalid params: egress: \"{egress}\" is not an egress policy this tenant may name"
            )
        );
    }
    let task = fetch(&admin, &format!("GET {}/hello", other.url()), &["other"]).await;
    assert_eq!(answers(&task), ["200, 5 bytes: hello"]);
    beta.assert_serves().await;
}

#[test]
fn attack_egress_server_refuses_to_start_on_a_bad_policy_naming_it() {
    let dir = Workdir::new();
    let data = tempfile::tempdir().unwrap();
    let data = data.path().display().to_string();
    let cases = [
        (
            "[[egress]]\nname = \"w\"\nallow = [\"https://api.example\"]\nheaders = { authorization = \"Bearer ${FABRIC_TEST_UNSET_SECRET}\" }\n",
            "policy \"w\": header authorization: the environment variable FABRIC_TEST_UNSET_SECRET is not set",
        ),
        (
            "[[egress]]\nname = \"w\"\nallow = [\"https://api.example/v1\"]\n",
            "a rule names no path",
        ),
        (
            "[[egress]]\nname = \"w\"\nallow = [\"https://api.example\"]\nsecret = \"x\"\n",
            "unknown field `secret`",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let config = dir
            .file(&format!("bad{i}.toml"), text.as_bytes())
            .display()
            .to_string();
        let out = fabric(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--config",
            &config,
        ]);
        assert!(!out.status.success(), "{text}");
        assert!(stderr(&out).contains(expected), "{text}: {}", stderr(&out));
    }
    let out = fabric(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--egress",
        "w=ftp://x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the scheme must be http or https"),
        "{}",
        stderr(&out)
    );
    // An auth file letting a tenant name an undefined policy.
    let auth = format!(
        "[[token]]\ntenant = \"acme\"\nsha256 = \"{}\"\negress = [\"ghost\"]\n",
        fabric_server::token_digest("t")
    );
    let auth = dir.file("auth.toml", auth.as_bytes()).display().to_string();
    let out = fabric(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--auth",
        &auth,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("lets tenant \"acme\" name egress policy \"ghost\", which is not defined"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn attack_egress_fabric_run_reaches_only_what_allow_grants() {
    let peer = Peer::start();
    let dir = Workdir::new();
    let fetch = dir.file("fetch.wasm", fabric_agents::p2::FETCH);
    let fetch = fetch.to_str().unwrap();
    let input = format!(
        "GET {0}/hello\nGET http://localhost:{1}/hello",
        peer.url(),
        peer.addr.port()
    );
    // Nothing allowed: both denied, the command says why.
    let out = fabric(&["run", fetch, "--input", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        stdout.matches("-> err: HttpRequestDenied").count(),
        2,
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("denied http://127.0.0.1:")
            && stderr(&out).contains("this attempt was granted no egress"),
        "{}",
        stderr(&out)
    );
    // The IP literal is allowed; the name resolving to loopback only with --allow-private.
    let localhost = format!("http://localhost:{}", peer.addr.port());
    let out = fabric(&[
        "run",
        fetch,
        "--input",
        &input,
        "--allow",
        &peer.url(),
        "--allow",
        &localhost,
        "--json",
    ]);
    let attempt = crate::util::attempt_json(&out);
    let lines: Vec<&str> = attempt["output"].as_str().unwrap().lines().collect();
    assert!(lines[0].ends_with("-> 200, 5 bytes: hello"), "{lines:?}");
    assert!(lines[1].ends_with("-> err: HttpRequestDenied"), "{lines:?}");
    assert!(
        attempt["denials"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("resolves only to non-public addresses"),
        "{attempt}"
    );
    assert_eq!(attempt["usage"]["http_requests"], 1);
    let out = fabric(&[
        "run",
        fetch,
        "--input",
        &input,
        "--allow",
        &peer.url(),
        "--allow",
        &localhost,
        "--allow-private",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        stdout.matches("-> 200, 5 bytes: hello").count(),
        2,
        "{stdout}"
    );
    assert!(stderr(&out).contains("http 2 sent"), "{}", stderr(&out));
    assert_eq!(peer.received().len(), 3);
    // A bad rule is a usage error naming it.
    let out = fabric(&["run", fetch, "--allow", "http://x.example/path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a rule names no path"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn egress_https_reaches_a_host_whose_ca_the_policy_trusts_and_no_other() {
    let dir = Workdir::new();
    let pki = crate::tls::make_pki(&dir, "peer");
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    // An https peer: another fabric server with a certificate for localhost and 127.0.0.1.
    let peer = Fabric::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let port = peer.url.rsplit(':').next().unwrap().to_string();
    let config = format!(
        "[[egress]]\nname = \"trusted\"\nallow = [\"https://localhost:{port}\"]\nprivate = true\nca_cert = \"{}\"\n\n[[egress]]\nname = \"public-roots\"\nallow = [\"https://127.0.0.1:{port}\"]\n",
        pki.ca.display()
    );
    let config = dir
        .file("egress.toml", config.as_bytes())
        .display()
        .to_string();
    let server = Fabric::start(&["--workers", "2", "--config", &config]);
    let client = server.client();
    let task = fetch(
        &client,
        &format!("GET https://localhost:{port}/healthz"),
        &["trusted"],
    )
    .await;
    let got = answers(&task);
    assert!(got[0].starts_with("200, "), "{got:?}");
    // The same peer under a policy trusting only the public web's roots: the handshake fails.
    let task = fetch(
        &client,
        &format!("GET https://127.0.0.1:{port}/healthz"),
        &["public-roots"],
    )
    .await;
    let got = answers(&task);
    assert!(got[0].starts_with("err: Tls"), "{got:?}");
    assert_eq!(task["attempts"][0]["usage"]["http_requests"], 1);
    client.assert_serves().await;
}
