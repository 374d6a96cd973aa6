//! `fabric serve --tls-cert --tls-key` with a CA and a server certificate made here: the
//! CLI and the library client reach it over https and wss when they trust the CA, are
//! refused with a certificate error when they do not, plain HTTP to the TLS port fails
//! cleanly while the server stays healthy, and bad TLS settings stop the start with the
//! file named.

use std::path::PathBuf;
use std::time::Duration;

use fabric_client::Client;
use fabric_types::wire::TaskSpec;
use futures_util::StreamExt as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::server::Fabric;
use crate::util::*;

/// A CA certificate (PEM), and a certificate for `localhost` and 127.0.0.1 it signed with
/// its key (PEM).
pub(crate) struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(crate) fn make_pki(dir: &Workdir, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca: dir.file(&format!("{name}-ca.pem"), ca_cert.pem().as_bytes()),
        cert: dir.file(&format!("{name}-cert.pem"), server.pem().as_bytes()),
        key: dir.file(&format!("{name}-key.pem"), key.serialize_pem().as_bytes()),
    }
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_serve_clients_that_trust_the_ca_and_refuse_the_others() {
    let dir = Workdir::new();
    let pki = make_pki(&dir, "fabric");
    let server = Fabric::start(&["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let trusted = [
        ("FABRIC_URL", server.url.as_str()),
        ("FABRIC_CA_CERT", path(&pki.ca)),
    ];

    let echo = dir.file("echo.wasm", fabric_agents::p1::ECHO);
    let out = fabric_with(
        &["module", "put", path(&echo), "--name", "echo"],
        &trusted,
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fabric_with(
        &["submit", "echo", "--input", "over tls", "--wait", "--json"],
        &trusted,
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let task = json_of(&out);
    assert_eq!(task["state"], "succeeded", "{task}");
    assert!(
        task["output"].as_str().unwrap().contains("over tls"),
        "{task}"
    );

    // Without the CA (the public roots only), and with another CA: a certificate error.
    let other = make_pki(&dir, "other");
    for env in [
        vec![("FABRIC_URL", server.url.as_str())],
        vec![
            ("FABRIC_URL", server.url.as_str()),
            ("FABRIC_CA_CERT", path(&other.ca)),
        ],
    ] {
        let out = fabric_with(&["submit", "echo", "--wait"], &env, b"");
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("cannot reach the server at https://") && said.contains("certificate"),
            "{env:?}: {said}"
        );
    }
    // A CA file that is not PEM is bad usage, named.
    let junk = dir.file("junk.pem", b"not a certificate");
    let out = fabric_with(
        &["task", "ls"],
        &[
            ("FABRIC_URL", server.url.as_str()),
            ("FABRIC_CA_CERT", path(&junk)),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("junk.pem: no CERTIFICATE block found"),
        "{}",
        stderr(&out)
    );

    // Plain HTTP to the TLS port fails, on the CLI and on a raw client, cleanly.
    let plain = server.url.replacen("https://", "http://", 1);
    let out = fabric_with(&["task", "ls"], &[("FABRIC_URL", plain.as_str())], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the server at http://"),
        "{}",
        stderr(&out)
    );
    for _ in 0..20 {
        let answer = reqwest::get(format!("{plain}/healthz")).await;
        assert!(answer.is_err(), "plain HTTP got an answer: {answer:?}");
    }

    // The server is still healthy over https.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = https
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The library client over https, and its event stream over wss.
    let client = Client::with_ca_cert(&server.url, None, Some(&pki.ca)).unwrap();
    let mut events = client.subscribe(None).await.unwrap();
    let spec = TaskSpec {
        module: "echo".into(),
        input: Some("streamed".into()),
        ..TaskSpec::default()
    };
    let submitted = client.task_submit(&spec).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(notice) = events.next().await {
            let notice = notice.unwrap();
            if notice.id == submitted.id && notice.state.is_terminal() {
                return notice.state;
            }
        }
        panic!("the wss event stream ended");
    })
    .await
    .expect("an event over wss within 30 s");
    assert_eq!(ended, fabric_types::TaskState::Succeeded);
}

#[test]
fn bad_tls_settings_stop_the_start_naming_what_is_wrong() {
    let dir = Workdir::new();
    let pki = make_pki(&dir, "fabric");
    let junk = dir.file("junk.pem", b"-----BEGIN NOTHING-----\n");
    let data = tempfile::tempdir().unwrap();
    let data = data.path();
    // Under `timeout`, so a server that starts anyway fails the test instead of hanging it.
    let serve = |extra: &[&str]| {
        std::process::Command::new("timeout")
            .args([
                "30",
                env!("CARGO_BIN_EXE_fabric"),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--data-dir", path(data)])
            .args(extra)
            .output()
            .expect("running fabric serve")
    };
    let cases: [(&[&str], Option<i32>, String); 5] = [
        (
            &["--tls-cert", path(&pki.cert)],
            Some(2),
            "--tls-cert needs --tls-key".into(),
        ),
        (
            &["--tls-key", path(&pki.key)],
            Some(2),
            "--tls-key needs --tls-cert".into(),
        ),
        (
            &["--tls-cert", path(&junk), "--tls-key", path(&pki.key)],
            Some(1),
            format!("the TLS certificate {} is not usable PEM", junk.display()),
        ),
        (
            &["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.cert)],
            Some(1),
            format!("the TLS key {} is not usable PEM", pki.cert.display()),
        ),
        (
            &[
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                path(&pki.key),
            ],
            Some(1),
            "cannot read the TLS certificate /nonexistent/cert.pem".into(),
        ),
    ];
    for (extra, code, message) in cases {
        let out = serve(extra);
        assert_eq!(out.status.code(), code, "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&message),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
    // A key that is not the certificate's.
    let other = make_pki(&dir, "other");
    let out = serve(&["--tls-cert", path(&pki.cert), "--tls-key", path(&other.key)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("do not make a server configuration"),
        "{}",
        stderr(&out)
    );
}
