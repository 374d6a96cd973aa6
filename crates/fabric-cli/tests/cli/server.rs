//! A real `fabric serve` process on a free port, spoken to only as docs/api.md describes
//! (raw JSON-RPC over HTTP), and stopped the ways an operator stops it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// One server process and the data directory it keeps between restarts.
pub struct Fabric {
    child: Child,
    pub url: String,
    data_dir: PathBuf,
    args: Vec<String>,
    /// A command that runs the server (the server's command line is appended).
    wrapper: Vec<String>,
    /// Environment variables set for the server.
    env: Vec<(String, String)>,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

/// How long a server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Fabric {
    /// Starts `fabric serve --listen 127.0.0.1:0 --data-dir <fresh tempdir> <args>`.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut fabric = Self::start_in(dir.path(), args);
        fabric._dir = Some(dir);
        fabric
    }

    /// Starts a server on an existing data directory.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_wrapped(&[], data_dir, args)
    }

    /// Starts `<wrapper...> fabric serve ...`: the server runs under another command (one
    /// that sets up its namespace, say), which must end by executing its arguments.
    pub fn start_wrapped(wrapper: &[&str], data_dir: &Path, args: &[&str]) -> Self {
        Self::start_full(wrapper, data_dir, args, &[])
    }

    /// [`Fabric::start`] with these environment variables set for the server.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut fabric = Self::start_full(&[], dir.path(), args, env);
        fabric._dir = Some(dir);
        fabric
    }

    fn start_full(wrapper: &[&str], data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let wrapper: Vec<String> = wrapper.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, url) = spawn(&wrapper, data_dir, &args, &env);
        Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            args,
            wrapper,
            env,
            http: reqwest::Client::new(),
            _dir: None,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The same server as another tenant.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            url: self.url.clone(),
            http: self.http.clone(),
            token: Some(token.to_string()),
        }
    }

    pub fn client(&self) -> Client {
        Client {
            url: self.url.clone(),
            http: self.http.clone(),
            token: None,
        }
    }

    /// `fabric <args>` (a client command) against this server, through `FABRIC_URL`.
    pub fn fabric(&self, args: &[&str]) -> std::process::Output {
        crate::util::fabric_with(args, &[("FABRIC_URL", &self.url)], b"")
    }

    /// Sends a signal (`TERM`, `KILL`, ...) to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `kill -9`, then a new process on the same data directory with the same arguments.
    pub fn kill_and_restart(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10)).expect("killed");
        self.restart();
    }

    /// Starts a new process on the same data directory (the old one must have exited).
    pub fn restart(&mut self) {
        let (child, url) = spawn(&self.wrapper, &self.data_dir, &self.args, &self.env);
        self.child = child;
        self.url = url;
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    wrapper: &[String],
    data_dir: &Path,
    args: &[String],
    env: &[(String, String)],
) -> (Child, String) {
    let fabric = env!("CARGO_BIN_EXE_fabric");
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(fabric);
            command
        }
        None => Command::new(fabric),
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("FABRIC_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting fabric serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(addr.trim().to_string()));
                }
            } else if let Some(tx) = &tx {
                let _ = tx.send(Err(line.clone()));
            }
            eprintln!("[fabric] {line}");
        }
    });
    let until = Instant::now() + START_TIMEOUT;
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Ok(url)) => return (child, url),
            Ok(Err(line)) => said.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("fabric serve did not start; it said: {said:#?}");
            }
        }
    }
}

/// Raw JSON-RPC over HTTP, as an outside client that knows only docs/api.md would speak it.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// Posts `body` to `/rpc`; the HTTP status and the parsed answer (`Null` when empty).
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/rpc", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("HTTP body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, value)
    }

    /// One call; the whole response object.
    pub async fn call_raw(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(body.to_string()).await.1
    }

    /// One call that must succeed; its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let answer = self.call_raw(method, params.clone()).await;
        match answer.get("result") {
            Some(result) => result.clone(),
            None => panic!("{method}({params}) failed: {answer}"),
        }
    }

    /// One call that must fail; its error object.
    pub async fn error(&self, method: &str, params: Value) -> Value {
        let answer = self.call_raw(method, params.clone()).await;
        match answer.get("error") {
            Some(error) => error.clone(),
            None => panic!("{method}({params}) should have failed: {answer}"),
        }
    }

    /// `module.put` of `bytes` under `name`; the module id.
    pub async fn put_module(&self, bytes: &[u8], name: &str) -> String {
        let wasm = base64::engine::general_purpose::STANDARD.encode(bytes);
        let result = self
            .call("module.put", json!({"wasm_base64": wasm, "name": name}))
            .await;
        result["module"].as_str().expect("module id").to_string()
    }

    /// `task.submit`; the task id.
    pub async fn submit(&self, spec: Value) -> String {
        let result = self.call("task.submit", spec).await;
        result["id"].as_str().expect("task id").to_string()
    }

    /// `task.wait` until terminal (fails the test after `timeout`).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let task = self
                .call("task.wait", json!({"id": id, "timeout_ms": 5_000}))
                .await;
            let state = task["state"].as_str().unwrap_or_default().to_string();
            if ["succeeded", "failed", "cancelled", "expired"].contains(&state.as_str()) {
                return task;
            }
            assert!(
                Instant::now() < until,
                "task {id} still {state} after {timeout:?}"
            );
        }
    }

    /// The server still runs an ordinary task (an echo succeeds with its input as its
    /// output) and `/healthz` answers 200: what every attack test checks after its attack.
    pub async fn assert_serves(&self) {
        let echo = self.put_module(fabric_agents::p1::ECHO, "echo").await;
        let id = self
            .submit(json!({"module": echo, "input": "still serving"}))
            .await;
        let task = self.wait(&id, Duration::from_secs(60)).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["output"], "still serving");
        assert_eq!(self.get("/healthz").await.0, 200);
    }

    /// `GET path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("HTTP body"))
    }
}

/// A client WebSocket to a server's `/rpc`.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message on a WebSocket, as JSON (fails the test after 60 s).
pub async fn next(socket: &mut Socket) -> Value {
    use futures_util::StreamExt;
    let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .expect("a message in time");
    let text = message
        .expect("open")
        .expect("frame")
        .into_text()
        .expect("text");
    serde_json::from_str(&text).unwrap()
}
