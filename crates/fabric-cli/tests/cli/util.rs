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

/// The JSON-RPC error code of an error object.
pub fn code(error: &serde_json::Value) -> i64 {
    error["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {error}"))
}

/// A token file with tenants `acme` and `globex` and an admin (tokens `acme-token`,
/// `globex-token`, `admin-token`).
pub fn auth_file(dir: &std::path::Path) -> PathBuf {
    let digest = fabric_server::token_digest;
    let text = format!(
        "[[token]]\ntenant = \"acme\"\nsha256 = \"{}\"\n\n[[token]]\ntenant = \"globex\"\nsha256 = \"{}\"\n\n[[token]]\nrole = \"admin\"\nsha256 = \"{}\"\n",
        digest("acme-token"),
        digest("globex-token"),
        digest("admin-token"),
    );
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path
}
