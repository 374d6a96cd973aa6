//! Fuzz target: arbitrary bytes as the body of `POST /rpc`, decoded and dispatched by the
//! server's own `handle_body` against one real server (SQLite store, sandbox, scheduler)
//! per process. Never a panic; the answer is nothing for notifications only, else one
//! well-formed JSON-RPC 2.0 response per answered call, with its id and a docs/api.md error
//! code; and the server still answers `fabric.stats` afterwards.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fabric_server::{App, DEFAULT_TENANT, Phase, Principal, Server, ServerConfig, StoreUrl};
use fabric_server::{Transport, handle_body};
use fabric_types::wire::code;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Workers of the fuzzed server (`fabric.stats` must report them).
const WORKERS: u32 = 2;
/// Calls one batch may hold; small, so that the fuzzer reaches the limit in 4 KiB.
const MAX_BATCH: usize = 32;
/// The longest `task.wait`; short, so that waiting on a task is not a hang.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How long one body may take before it counts as a hang (libFuzzer's -timeout is 20 s).
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The codes of docs/api.md. -32603 (internal) is one, but no request may cause it while the
/// store is healthy, so it is checked apart.
const CODES: &[i64] = &[
    code::PARSE_ERROR,
    code::INVALID_REQUEST,
    code::METHOD_NOT_FOUND,
    code::INVALID_PARAMS,
    code::INTERNAL,
    code::UNAUTHORIZED,
    code::NOT_FOUND,
    code::QUOTA,
    code::DRAINING,
    code::MODULE_INVALID,
    code::STORE_FULL,
];

const HEALTH: &[u8] = br#"{"jsonrpc":"2.0","method":"fabric.stats","id":"health"}"#;

/// The runtime and the server every input is dispatched against.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: Arc<App>,
}

/// The data directory, removed at exit.
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_data_dir() {
    if let Some(dir) = DATA_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> i32;
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("fabric-fuzz-rpc-")
            .tempdir()
            .expect("creating a data directory")
            .keep();
        DATA_DIR.set(dir.clone()).expect("one data directory");
        // SAFETY: registers a plain function that only removes a directory.
        unsafe { atexit(remove_data_dir) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let mut config = ServerConfig::defaults();
        config.listen = "127.0.0.1:0".parse().expect("a valid address");
        config.store = StoreUrl::Sqlite(dir.join("fabric.db"));
        config.data_dir = dir;
        config.workers = WORKERS;
        config.max_batch = MAX_BATCH;
        config.max_wait = MAX_WAIT;
        config.max_task_memory = 16 << 20;
        let app = runtime.block_on(async {
            let server = Server::start(config).await.expect("starting the server");
            let app = server.app().clone();
            tokio::spawn(server.run(std::future::pending()));
            app.phase()
                .wait_for(|phase| *phase == Phase::Ready)
                .await
                .expect("the server becomes ready");
            app
        });
        Fixture { runtime, app }
    })
}

/// Dispatches `body` as `POST /rpc` does for the tenant of a server without `--auth`.
fn dispatch(fixture: &Fixture, body: &[u8]) -> Option<Value> {
    let who = Principal::tenant(DEFAULT_TENANT);
    let answer = fixture.runtime.block_on(async {
        tokio::time::timeout(
            DISPATCH_TIMEOUT,
            handle_body(&fixture.app, &who, body, Transport::Http),
        )
        .await
    });
    answer.unwrap_or_else(|_| {
        panic!(
            "no answer within {DISPATCH_TIMEOUT:?} to {}",
            String::from_utf8_lossy(body)
        )
    })
}

/// The id the answer to `request` carries, or `None` when it gets no answer: a valid
/// notification. A request whose id is missing or unreadable is answered with `null`.
fn answered_with(request: &Value) -> Option<Value> {
    let Value::Object(object) = request else {
        return Some(Value::Null);
    };
    match object.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id.clone()),
        Some(_) => Some(Value::Null),
        None => {
            let notification = object.get("jsonrpc") == Some(&json!("2.0"))
                && matches!(object.get("method"), Some(Value::String(_)))
                && matches!(
                    object.get("params"),
                    None | Some(Value::Null | Value::Object(_))
                );
            (!notification).then_some(Value::Null)
        }
    }
}

/// Checks one response object: `jsonrpc`, the expected `id`, and exactly one of `result`
/// or a well-formed `error`. Returns the error code, if any.
fn check_response(response: &Value, id: &Value) -> Option<i64> {
    let object = response
        .as_object()
        .unwrap_or_else(|| panic!("a response is not an object: {response}"));
    assert_eq!(
        object.get("jsonrpc"),
        Some(&json!("2.0")),
        "jsonrpc: {response}"
    );
    assert_eq!(object.get("id"), Some(id), "the wrong id: {response}");
    assert_eq!(
        object.len(),
        3,
        "members other than jsonrpc, id and result or error: {response}"
    );
    match (object.get("result"), object.get("error")) {
        (Some(_), None) => None,
        (None, Some(error)) => Some(check_error(error, response)),
        _ => panic!("not exactly one of result and error: {response}"),
    }
}

fn check_error(error: &Value, response: &Value) -> i64 {
    let error = error
        .as_object()
        .unwrap_or_else(|| panic!("an error is not an object: {response}"));
    assert!(
        error
            .keys()
            .all(|key| matches!(key.as_str(), "code" | "message" | "data")),
        "unexpected members in an error: {response}"
    );
    assert!(
        error.get("message").is_some_and(Value::is_string),
        "an error without a message: {response}"
    );
    let code = error
        .get("code")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("an error without an integer code: {response}"));
    assert!(CODES.contains(&code), "a code not in docs/api.md: {response}");
    assert_ne!(
        code,
        code::INTERNAL,
        "an internal error for a request the server should have refused: {response}"
    );
    if code == code::INVALID_PARAMS {
        assert!(
            error
                .get("data")
                .and_then(|d| d.get("field"))
                .is_some_and(Value::is_string),
            "invalid params without data naming the field: {response}"
        );
    }
    code
}

/// Checks the whole answer to `body`.
fn check_answer(body: &[u8], answer: Option<&Value>) {
    let shown = || String::from_utf8_lossy(body).into_owned();
    let single_error = |answer: Option<&Value>, expected: i64| {
        let response = answer.unwrap_or_else(|| panic!("no answer to {}", shown()));
        assert_eq!(
            check_response(response, &Value::Null),
            Some(expected),
            "{}",
            shown()
        );
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => return single_error(answer, code::PARSE_ERROR),
    };
    let not_a_parse_error = |code: Option<i64>| {
        assert_ne!(
            code,
            Some(code::PARSE_ERROR),
            "a parse error for JSON: {}",
            shown()
        );
    };
    match &request {
        Value::Array(calls) if calls.is_empty() || calls.len() > MAX_BATCH => {
            single_error(answer, code::INVALID_REQUEST);
        }
        Value::Array(calls) => {
            let ids: Vec<Value> = calls.iter().filter_map(answered_with).collect();
            if ids.is_empty() {
                assert!(
                    answer.is_none(),
                    "an answer to notifications only: {}",
                    shown()
                );
                return;
            }
            let Some(Value::Array(responses)) = answer else {
                panic!("a batch not answered with an array: {}", shown());
            };
            assert_eq!(
                responses.len(),
                ids.len(),
                "one answer per call: {}",
                shown()
            );
            for (response, id) in responses.iter().zip(&ids) {
                not_a_parse_error(check_response(response, id));
            }
        }
        single => match answered_with(single) {
            None => assert!(answer.is_none(), "an answer to a notification: {}", shown()),
            Some(id) => {
                let response = answer.unwrap_or_else(|| panic!("no answer to {}", shown()));
                not_a_parse_error(check_response(response, &id));
            }
        },
    }
}

/// The server still answers, and knows its workers.
fn check_health(fixture: &Fixture) {
    assert!(fixture.app.is_ready(), "the server is no longer ready");
    let answer = dispatch(fixture, HEALTH).expect("an answer to fabric.stats");
    assert_eq!(
        answer["result"]["workers"],
        json!(WORKERS),
        "fabric.stats after the input: {answer}"
    );
    assert!(answer["result"]["queued"].is_object(), "{answer}");
}

/// `RPC_DISPATCH_SHOW=1` prints every answer on stderr (to see what a reproduced input got).
fn show() -> bool {
    static SHOW: OnceLock<bool> = OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("RPC_DISPATCH_SHOW").is_some())
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let answer = dispatch(fixture, data);
    if show() {
        eprintln!(
            "{}",
            answer
                .as_ref()
                .map_or("(no answer)".into(), Value::to_string)
        );
    }
    check_answer(data, answer.as_ref());
    check_health(fixture);
});
