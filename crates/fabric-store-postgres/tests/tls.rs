//! TLS to PostgreSQL as the URL's `sslmode` asks. The local test server runs with `ssl=on`
//! and Debian's self-signed certificate for `localhost` (`ssl_cert_file`), which the
//! verifying modes are given as `sslrootcert`; a server without TLS is played by a socket
//! that answers the TLS request with PostgreSQL's "no".

mod util;

use fabric_store::{StatsParams, Store};
use fabric_store_postgres::{PostgresOptions, PostgresStore};

/// `url` with `params` added to its query.
fn with(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// Whether the connections of `application_name` are encrypted, as the server sees them.
async fn encrypted(application_name: &str) -> Vec<bool> {
    let raw = util::raw(&util::url()).await.unwrap();
    raw.query(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = $1",
        &[&application_name],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// The server's certificate file (readable by everyone on Debian).
async fn server_cert() -> String {
    let raw = util::raw(&util::url()).await.unwrap();
    raw.query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0)
}

async fn connect(url: &str, schema: &str, app: &str) -> Result<PostgresStore, String> {
    let options = PostgresOptions {
        application_name: app.to_owned(),
        ..util::options(schema)
    };
    PostgresStore::connect(url, options)
        .await
        .map_err(|e| util::chain(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_connects_as_libpq_would() {
    let guard = util::SchemaGuard::new(util::fresh_schema());
    let base = util::url();
    let cert = server_cert().await;
    let localhost = base.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(localhost, base, "the test URL names 127.0.0.1: {base}");
    let cases = [
        ("plain", base.clone(), false),
        ("disable", with(&base, "sslmode=disable"), false),
        ("prefer", with(&base, "sslmode=prefer"), true),
        ("require", with(&base, "sslmode=require"), true),
        (
            "verify-ca",
            with(&base, &format!("sslmode=verify-ca&sslrootcert={cert}")),
            true,
        ),
        (
            "verify-full",
            with(
                &localhost,
                &format!("sslmode=verify-full&sslrootcert={cert}"),
            ),
            true,
        ),
    ];
    for (mode, url, tls) in cases {
        let app = format!("fabric-tls-{mode}-{:x}", rand::random::<u32>());
        let store = connect(&url, &guard.schema, &app)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        store.stats(StatsParams::default()).await.unwrap();
        let seen = encrypted(&app).await;
        assert!(!seen.is_empty(), "{mode}: no connection of {app}");
        assert!(
            seen.iter().all(|&ssl| ssl == tls),
            "{mode}: encrypted {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_and_a_server_without_tls_are_errors_not_plain_connections() {
    let guard = util::SchemaGuard::new(util::fresh_schema());
    let base = util::url();
    let cert = server_cert().await;
    // The certificate names localhost, not 127.0.0.1.
    let err = connect(
        &with(&base, &format!("sslmode=verify-full&sslrootcert={cert}")),
        &guard.schema,
        "fabric-tls-name",
    )
    .await
    .expect_err("verify-full accepted a certificate for another name");
    assert!(err.contains("certificate not valid for name"), "{err}");
    // Signed by no CA the public roots hold.
    let localhost = base.replacen("127.0.0.1", "localhost", 1);
    let err = connect(
        &with(&localhost, "sslmode=verify-full"),
        &guard.schema,
        "fabric-tls-roots",
    )
    .await
    .expect_err("verify-full trusted a self-signed certificate");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // A server that answers the TLS request with 'N', as PostgreSQL with ssl=off does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"N").await;
                let mut rest = Vec::new();
                let _ = socket.read_to_end(&mut rest).await;
            }
        }
    });
    let no_tls = format!("postgres://postgres@127.0.0.1:{port}/test?connect_timeout=5");
    for mode in ["require", "verify-full"] {
        let err = connect(
            &with(&no_tls, &format!("sslmode={mode}")),
            &guard.schema,
            "x",
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("sslmode={mode} connected to a server without TLS"));
        assert!(err.contains("server does not support TLS"), "{mode}: {err}");
    }
}
