//! The dashboard at `/ui` in a real browser: headless Chromium loads the pages from a real
//! server with a workload and the test reads the rendered DOM as a person would read the
//! page; plus the static serving rules (content types, CSP, no other host) and the
//! WebSocket's bearer subprotocol that browsers use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::server::Fabric;
use crate::util::auth_file;

const WAIT: Duration = Duration::from_secs(60);

/// The Chromium to drive: `$FABRIC_CHROMIUM`, else the first of the usual names on PATH.
/// Missing is a failure, never a skip: `.ci/run` installs it.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("FABRIC_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the dashboard tests need Chromium: install it (Debian: apt-get install -y --no-install-recommends chromium; .ci/run does) or set FABRIC_CHROMIUM to its path"
    );
}

/// Headless Chromium on `url` with a fresh profile, given `budget_ms` of virtual time
/// for the page's scripts, calls and timers; `extra` names the output (`--dump-dom`,
/// `--screenshot=FILE`). Its stdout.
fn browse(url: &str, budget_ms: u64, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The page's DOM after its scripts ran.
fn dom(url: &str) -> String {
    browse(url, 5_000, &["--dump-dom"])
}

/// What a person reads on the page: the text of the body without markup, scripts or
/// styles, whitespace collapsed.
fn visible_text(html: &str) -> String {
    let body = html.split_once("<body").map_or(html, |(_, b)| b);
    let mut text = String::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        let tag = &rest[open..];
        let skip_to = ["<script", "<style", "<noscript"]
            .iter()
            .find(|t| tag.starts_with(**t))
            .map(|t| format!("</{}>", &t[1..]));
        rest = match skip_to.and_then(|end| tag.find(&end).map(|at| &tag[at + end.len()..])) {
            Some(after) => after,
            None => tag.find('>').map_or("", |at| &tag[at + 1..]),
        };
    }
    text.push_str(rest);
    let text = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_shows(page: &str, text: &str, wanted: &str) {
    assert!(
        text.contains(wanted),
        "{page} should show {wanted:?}; it shows: {text}"
    );
}

/// Screenshots for the docs, when `FABRIC_UI_SCREENSHOTS` names a directory.
fn screenshot(url: &str, name: &str) {
    let Some(dir) = std::env::var_os("FABRIC_UI_SCREENSHOTS") else {
        return;
    };
    let file = Path::new(&dir).join(name);
    browse(url, 5_000, &[&format!("--screenshot={}", file.display())]);
    assert!(file.is_file(), "no screenshot at {}", file.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_show_counts_tasks_a_failed_tasks_log_and_the_modules() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    client.put_module(fabric_agents::p1::STRICT, "strict").await;
    let mut ok = Vec::new();
    for i in 0..3 {
        let spec =
            json!({"module": "echo", "input": format!("hello {i}"), "labels": {"kind": "ok"}});
        ok.push(client.submit(spec).await);
    }
    let failed = client
        .submit(
            json!({"module": "strict", "input": "{\"name\": 5}", "priority": "high",
                       "retry": {"max_attempts": 1}, "labels": {"kind": "bad"}}),
        )
        .await;
    for id in ok.iter().chain([&failed]) {
        client.wait(id, WAIT).await;
    }
    let ui = format!("{}/ui", fabric.url);

    let overview = visible_text(&dom(&format!("{ui}/")));
    for wanted in [
        "Overview",
        "succeeded 3",
        "failed 1",
        "queued 0",
        "0 / 2 workers busy / total",
        "Queued by priority",
        "critical 0",
    ] {
        assert_shows("the overview", &overview, wanted);
    }

    let all = visible_text(&dom(&format!("{ui}/tasks")));
    for id in ok.iter().chain([&failed]) {
        assert_shows("the task list", &all, id);
    }
    assert_shows("the task list", &all, "exit 3");
    assert_shows("the task list", &all, "4 shown of 4 loaded, newest first.");
    let newest_first = all.find(&failed).unwrap() < all.find(&ok[0]).unwrap();
    assert!(newest_first, "the failed task was submitted last: {all}");
    screenshot(&format!("{ui}/tasks"), "tasks.png");

    let only_failed = visible_text(&dom(&format!("{ui}/tasks?state=failed")));
    assert_shows("?state=failed", &only_failed, &failed);
    assert!(!only_failed.contains(&ok[0]), "{only_failed}");
    let by_module = visible_text(&dom(&format!("{ui}/tasks?module=strict")));
    assert_shows("?module=strict", &by_module, &failed);
    assert!(!by_module.contains(&ok[1]), "{by_module}");
    let by_label = visible_text(&dom(&format!("{ui}/tasks?label=kind%3Dok")));
    assert_shows("?label=kind=ok", &by_label, &ok[2]);
    assert!(!by_label.contains(&failed), "{by_label}");

    let task = visible_text(&dom(&format!("{ui}/tasks/{failed}")));
    for wanted in [
        failed.as_str(),
        "failed",
        "attempt 1 ended with exit code 3",
        "Attempt 1: exit 3",
        "exit code 3",
        "Stderr field `name` is not a string",
        "priority high",
        "kind=bad",
        "Retry as a new task",
        "wall time",
    ] {
        assert_shows("the failed task's page", &task, wanted);
    }
    assert!(
        !task.contains("Cancel"),
        "a finished task has no cancel: {task}"
    );
    screenshot(&format!("{ui}/tasks/{failed}"), "failed-task.png");

    let modules = visible_text(&dom(&format!("{ui}/modules")));
    for wanted in ["echo", "strict", "3 succeeded", "1 failed", "module"] {
        assert_shows("the modules page", &modules, wanted);
    }
    let discover = client.call("rpc.discover", json!({})).await;
    let has_kpis = discover["methods"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "kpi.query");
    let kpis = if has_kpis {
        "KPIs"
    } else {
        "KPIs need a newer server"
    };
    assert_shows("the modules page", &modules, kpis);
    screenshot(&format!("{ui}/modules"), "modules.png");
}

/// A page held open in headless Chromium and read in real time over the DevTools
/// protocol (what `--dump-dom` cannot do: its virtual time runs ahead of the server).
struct LivePage {
    child: std::process::Child,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    calls: u64,
    _profile: tempfile::TempDir,
}

impl LivePage {
    async fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("running chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let until = std::time::Instant::now() + WAIT;
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text.lines().next().filter(|l| !l.is_empty())
            {
                break port.to_string();
            }
            assert!(
                std::time::Instant::now() < until,
                "chromium never opened its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page among {targets}"));
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .expect("DevTools socket");
        Self {
            child,
            socket,
            calls: 0,
            _profile: profile,
        }
    }

    /// The page's visible text now.
    async fn text(&mut self) -> String {
        self.calls += 1;
        let call = json!({"id": self.calls, "method": "Runtime.evaluate",
            "params": {"expression": "document.body.innerText", "returnByValue": true}});
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                call.to_string().into(),
            ))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a DevTools answer")
                .unwrap()
                .unwrap();
            let answer: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if answer["id"] == self.calls {
                let text = answer["result"]["result"]["value"].as_str().unwrap_or("");
                return text.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }

    /// Writes the page as it looks now to `FABRIC_UI_SCREENSHOTS/name` when that is set.
    async fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("FABRIC_UI_SCREENSHOTS") else {
            return;
        };
        self.calls += 1;
        let call = json!({"id": self.calls, "method": "Page.captureScreenshot", "params": {}});
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                call.to_string().into(),
            ))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a DevTools answer")
                .unwrap()
                .unwrap();
            let answer: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if answer["id"] == self.calls {
                let png = base64::engine::general_purpose::STANDARD
                    .decode(answer["result"]["data"].as_str().expect("PNG data"))
                    .unwrap();
                std::fs::write(Path::new(&dir).join(name), png).unwrap();
                return;
            }
        }
    }

    /// Waits (in real time, at most [`WAIT`]) until the page shows `wanted`.
    async fn shows(&mut self, wanted: &str) -> String {
        let until = std::time::Instant::now() + WAIT;
        loop {
            let text = self.text().await;
            if text.contains(wanted) {
                return text;
            }
            assert!(
                std::time::Instant::now() < until,
                "the page never showed {wanted:?}; it shows: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LivePage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_pages_follow_events_without_a_reload() {
    let fabric = Fabric::start(&["--workers", "2"]);
    let client = fabric.client();
    client.put_module(fabric_agents::p1::SLEEP, "sleep").await;
    client.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = client
        .submit(json!({"module": "sleep", "input": "60000"}))
        .await;
    let mut task = LivePage::open(&format!("{}/ui/tasks/{id}", fabric.url)).await;
    let text = task.shows("Cancel").await;
    assert!(
        text.contains("running") || text.contains("queued"),
        "{text}"
    );
    assert!(!text.contains("Retry"), "{text}");
    // Cancelled by another client: the open page learns it from its task.event.
    client.call("task.cancel", json!({"id": id})).await;
    let text = task.shows("Retry as a new task").await;
    assert!(text.contains("cancelled"), "{text}");

    let mut list = LivePage::open(&format!("{}/ui/tasks", fabric.url)).await;
    list.shows(&id).await;
    list.shows("1 shown of 1 loaded").await;
    let fresh = client
        .submit(json!({"module": "echo", "input": "arrives live"}))
        .await;
    list.shows(&fresh).await;
    list.shows("2 shown of 2 loaded").await;
    // Finished before the overview opens, so that it counts only what finishes after.
    client.wait(&fresh, WAIT).await;

    let mut overview = LivePage::open(&format!("{}/ui/", fabric.url)).await;
    overview.shows("last minute 0").await;
    let more = client
        .submit(json!({"module": "echo", "input": "counted"}))
        .await;
    client.wait(&more, WAIT).await;
    // The throughput table counts the finished task the socket reported.
    overview.shows("last minute 1").await;

    if std::env::var_os("FABRIC_UI_SCREENSHOTS").is_some() {
        // For the docs: the overview after a few seconds of mixed work.
        client.put_module(fabric_agents::p1::STRICT, "strict").await;
        for round in 0..12 {
            for i in 0..(10 + round % 4 * 5) {
                let input = format!("{{\"name\": \"n{i}\"}}");
                client
                    .submit(json!({"module": "strict", "input": input}))
                    .await;
            }
            if round % 3 == 0 {
                client
                    .submit(json!({"module": "strict", "input": "not json", "retry": {"max_attempts": 1}}))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        client
            .submit(json!({"module": "sleep", "input": "30000", "priority": "high"}))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        overview.screenshot("overview.png").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_the_page_asks_for_a_token_and_shows_no_data_before() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let acme = fabric.with_token("acme-token");
    acme.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = acme
        .submit(json!({"module": "echo", "input": "secret"}))
        .await;
    acme.wait(&id, WAIT).await;
    let text = visible_text(&dom(&format!("{}/ui/tasks/{id}", fabric.url)));
    assert_shows("the signed-out page", &text, "Sign in");
    assert_shows("the signed-out page", &text, "needs a token");
    assert!(!text.contains(&id), "no tenant data before a token: {text}");
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_is_served_under_ui_with_its_types_and_policy_and_names_no_other_host() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    // With --auth, and no token: the static app holds no data and needs none.
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let response = http
            .get(format!("{}{path}", fabric.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    };
    let (status, headers, index) = get("/ui").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    for path in ["/ui/", "/ui/tasks", "/ui/tasks/abc?x=1", "/ui/deep/er/path"] {
        let (status, _, body) = get(path).await;
        assert_eq!((status, body.as_str()), (200, index.as_str()), "{path}");
    }
    assert_eq!(get("/ui/assets/nothing.js").await.0, 404);

    // Every file the app loads, found by following its references from the page.
    let mut pending = vec![
        "/ui/assets/app.js".to_string(),
        "/ui/assets/style.css".to_string(),
    ];
    let mut seen = Vec::new();
    let origin = fabric.url.clone();
    let mut scanned = vec![("/ui".to_string(), index)];
    while let Some(path) = pending.pop() {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path.clone());
        let (status, headers, body) = get(&path).await;
        assert_eq!(status, 200, "{path}");
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(headers["content-type"], expected, "{path}");
        for (at, _) in body.match_indices("from './") {
            let name: String = body[at + 8..].chars().take_while(|c| *c != '\'').collect();
            pending.push(format!("/ui/assets/{name}"));
        }
        scanned.push((path, body));
    }
    assert!(seen.len() >= 7, "the app's modules: {seen:?}");
    for (path, body) in &scanned {
        for scheme in ["http://", "https://", "//cdn", "wss://", "ws://"] {
            for (at, _) in body.match_indices(scheme) {
                let url: String = body[at..].chars().take(60).collect();
                assert!(url.starts_with(&origin), "{path} names another host: {url}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_websocket_authenticates_with_the_bearer_subprotocol() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path());
    let fabric = Fabric::start(&["--auth", auth.to_str().unwrap()]);
    let ws_url = fabric.url.replacen("http://", "ws://", 1) + "/rpc";
    let connect = async |protocols: &str| {
        let mut request = ws_url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
        tokio_tungstenite::connect_async(request).await
    };
    let bearer = |token: &str| {
        format!(
            "fabric.rpc, fabric.bearer.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
        )
    };
    let refused = connect(&bearer("wrong-token")).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    assert!(connect("fabric.rpc").await.is_err(), "no token, no socket");

    let (mut socket, response) = connect(&bearer("acme-token")).await.expect("accepted");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "fabric.rpc",
        "the server selects the plain protocol and never echoes the token"
    );
    let message =
        |value: Value| tokio_tungstenite::tungstenite::Message::Text(value.to_string().into());
    socket
        .send(message(
            json!({"jsonrpc": "2.0", "id": 1, "method": "task.subscribe", "params": {}}),
        ))
        .await
        .unwrap();
    let acme = fabric.with_token("acme-token");
    let answer = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(answer["result"]["subscribed"], true, "{answer}");
    acme.put_module(fabric_agents::p1::ECHO, "echo").await;
    let id = acme.submit(json!({"module": "echo", "input": "x"})).await;
    // The socket is acme's: its own task's events arrive on it.
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if event["params"]["id"] == id.as_str() && event["params"]["state"] == "succeeded" {
            break;
        }
    }
}
