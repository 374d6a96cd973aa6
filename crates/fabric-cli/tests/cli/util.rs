//! Helpers to run the real `fabric` binary on agents written to temporary files.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A temporary directory holding agent files for one test.
pub struct Workdir(tempfile::TempDir);

impl Workdir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("creating a temporary directory"))
    }

    /// Writes `bytes` to `name` in the directory and returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, bytes).expect("writing a test file");
        path
    }
}

/// `fabric <args>` with a clean environment plus `env`, and `stdin` on its stdin.
pub fn fabric_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting fabric");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("waiting for fabric")
}

pub fn fabric(args: &[&str]) -> Output {
    fabric_with(args, &[], b"")
}

/// The one JSON object `--json` prints.
pub fn attempt_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout: {stdout:?}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `fabric serve --listen 127.0.0.1:0` process on a fresh data directory, killed when
/// dropped; client commands reach it through `FABRIC_URL`.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, from the line `listening on http://ADDR` on its stderr.
    pub url: String,
    _data_dir: tempfile::TempDir,
}

impl ServeProcess {
    /// How long the server may take to say where it listens.
    const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn start(extra: &[&str]) -> Self {
        use std::io::BufRead as _;

        let data_dir = tempfile::tempdir().expect("creating a data directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fabric"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(extra)
            .env("FABRIC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting fabric serve");
        // Read stderr to its end on a thread, so the server never blocks on a full pipe.
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let until = std::time::Instant::now() + Self::START_TIMEOUT;
        let mut said = Vec::new();
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => match line.strip_prefix("listening on ") {
                    Some(url) => {
                        return Self {
                            child,
                            url: url.trim().to_owned(),
                            _data_dir: data_dir,
                        };
                    }
                    None => said.push(line),
                },
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("fabric serve did not say where it listens; it said: {said:#?}");
                }
            }
        }
    }

    /// `fabric <args>` against this server.
    pub fn fabric(&self, args: &[&str]) -> Output {
        fabric_with(args, &[("FABRIC_URL", &self.url)], b"")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback URL where nothing listens: a port that was free a moment ago.
pub fn unused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The one JSON object a client command printed with `--json` (its stderr in the panic
/// message when there is not exactly one).
pub fn json_of(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout: {stdout:?}; stderr: {}",
        stderr(output)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
