//! What the PostgreSQL tests share: the database URL, a fresh schema per test with a guard
//! that drops it (also when the test panics), a raw connection for looking inside, and
//! one clear failure when no database answers.

#![allow(dead_code)] // each test binary uses its own part

use std::error::Error as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabric_store_postgres::{PostgresOptions, PostgresStore};
use tokio::sync::{OnceCell, mpsc};
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// The variable naming the test database.
pub const URL_ENV: &str = "FABRIC_TEST_POSTGRES";
/// The database used when [`URL_ENV`] is unset.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Every test schema starts with this, then the Unix time it was made and a random part.
pub const SCHEMA_PREFIX: &str = "fabric_test_";
/// Test schemas older than this are taken for leftovers of a killed run and dropped.
const STALE_AFTER_SECS: u64 = 3_600;

/// How long the probe of the test database waits for it to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The test database URL; fails the test first unless the database answers (see
/// [`require_database`]).
pub fn url() -> String {
    require_database();
    configured_url()
}

/// The URL [`URL_ENV`] names, unchecked.
fn configured_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Whether the test database answered when first asked, once per test binary.
fn probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let url = configured_url();
        on_own_runtime(async move {
            match tokio::time::timeout(PROBE_TIMEOUT, raw(&url)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(chain(&e)),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            }
        })
    })
}

/// Fails the test unless the test database answers. The first test to find it missing
/// fails with what to set or install; every other one with a single short line.
pub fn require_database() {
    static TOLD: AtomicBool = AtomicBool::new(false);
    let Err(why) = probe() else { return };
    if TOLD.swap(true, Ordering::SeqCst) {
        panic!("no PostgreSQL for the tests (the first failing test says what to do)");
    }
    panic!(
        "no PostgreSQL answers at {url} ({why}).\n\
         These tests need a PostgreSQL server where they may create schemas: set {URL_ENV} \
         to its URL (default {DEFAULT_URL}), or install PostgreSQL (initdb and pg_ctl) and run \
         .ci/run, which starts a throwaway server when none answers.",
        url = configured_url()
    );
}

/// A schema name no other test or run uses: `fabric_test_<unix seconds>_<random>`.
/// Fails the test first unless the database answers.
pub fn fresh_schema() -> String {
    require_database();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{SCHEMA_PREFIX}{secs}_{:016x}", rand::random::<u64>())
}

/// Options for a test store in `schema`: a small pool.
pub fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        application_name: "fabric-test".into(),
        ..PostgresOptions::default().with_schema(schema)
    }
}

/// An error with its sources, for failure messages.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Connects a store, failing the test with a clear message when PostgreSQL is not there.
/// A store on `options`' schema, holding the conformance cases' module for their tenants
/// (`testkit::seed`), as the tasks the tests insert need.
pub async fn connect(options: PostgresOptions) -> PostgresStore {
    let url = url();
    match PostgresStore::connect(&url, options).await {
        Ok(store) => {
            fabric_store::testkit::seed(&store).await;
            store
        }
        Err(e) => panic!(
            "cannot open a PostgreSQL store at {url} (set {URL_ENV} to a reachable database): {}",
            chain(&e)
        ),
    }
}

/// A fresh store in its own schema, and the guard that drops the schema.
pub async fn store() -> (PostgresStore, SchemaGuard) {
    sweep_stale_schemas().await;
    let guard = SchemaGuard::new(fresh_schema());
    let store = connect(options(&guard.schema)).await;
    (store, guard)
}

/// Drops its schema (and everything in it) when dropped: at the end of the test, or while
/// it unwinds from a panic.
#[derive(Debug)]
pub struct SchemaGuard {
    pub schema: String,
}

impl SchemaGuard {
    /// Guards `schema`, which need not exist yet.
    pub fn new(schema: String) -> Self {
        assert!(
            schema.starts_with(SCHEMA_PREFIX),
            "not a test schema: {schema}"
        );
        Self { schema }
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if probe().is_err() {
            return; // the test already failed for the missing database; nothing was made
        }
        if let Err(e) = drop_schema_blocking(&configured_url(), &self.schema) {
            eprintln!("warning: test schema {} was not dropped: {e}", self.schema);
        }
    }
}

/// Drops `schema` from a thread of its own with its own runtime, so it works from `Drop`
/// whether or not a runtime is running on this thread.
pub fn drop_schema_blocking(url: &str, schema: &str) -> Result<(), String> {
    let (url, schema) = (url.to_string(), schema.to_string());
    on_own_runtime(async move {
        let client = raw(&url).await.map_err(|e| chain(&e))?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
            ))
            .await
            .map_err(|e| chain(&e))
    })
}

/// Runs `work` on a thread with a runtime of its own, so it works from `Drop` and whether
/// or not a runtime is running on this thread.
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(work)
    })
    .join()
    .map_err(|_| "the thread panicked".to_string())?
}

/// Drops test schemas left behind by runs that were killed, once per test binary.
pub async fn sweep_stale_schemas() {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let Ok(client) = raw(&url()).await else {
                return; // the store's connect reports an unreachable database
            };
            let Ok(rows) = client
                .query(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                    &[&SCHEMA_PREFIX],
                )
                .await
            else {
                return;
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for row in rows {
                let name: String = row.get(0);
                let made = name[SCHEMA_PREFIX.len()..]
                    .split('_')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok());
                if made.is_some_and(|made| made + STALE_AFTER_SECS < now) {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            }
        })
        .await;
}

/// A plain connection (no schema, no pool) whose connection task runs in the background.
pub async fn raw(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A connection whose notifications arrive on the returned channel.
pub async fn raw_with_notifications(url: &str) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {}", chain(&e)));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}

/// Whether `schema` exists.
pub async fn schema_exists(schema: &str) -> bool {
    let client = raw(&url()).await.expect("connect to the test database");
    client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .expect("look up a schema")
        .get::<_, i64>(0)
        == 1
}

/// Keeps `e`'s first source for messages (used by tests that expect an error).
pub fn describe(e: &fabric_store::StoreError) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
