//! The Rust SDK for Execution Fabric agents: the task's input, output and arguments, the
//! KPIs and progress an agent reports to the host (`fabric:agent/telemetry`), and the
//! child tasks it submits (`fabric:agent/tasks`).
//!
//! An agent is a WASI command: it reads its input on stdin, writes its output on stdout
//! (its log on stderr) and ends with an exit code. Build it for either target:
//!
//! - `cargo build --release --target wasm32-wasip1`: a core module; the calls go to the
//!   host's `fabric.kpi`, `fabric.progress` and `fabric.submit` imports, and a refusal
//!   carries a code.
//! - `cargo build --release --target wasm32-wasip2`: a component; the calls go to the
//!   `fabric:agent/telemetry@0.1.0` and `fabric:agent/tasks@0.1.0` interfaces of
//!   `wit/fabric-agent.wit`, and a refusal carries the host's message.
//!
//! [`kpi`], [`progress`] and [`submit`] exist only on those two targets; [`input`],
//! [`output`] and [`args`] on every target, so an agent's own logic can be tested on the
//! host.
//!
//! A refused call changes nothing and the agent goes on; an agent may ignore refusals.

use std::fmt;
use std::io::{self, Read, Write};

#[cfg(all(target_arch = "wasm32", target_env = "p1"))]
mod p1;
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
mod p2;

#[cfg(all(target_arch = "wasm32", target_env = "p1"))]
use p1 as abi;
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
use p2 as abi;

/// Records one value of the KPI `name` (`[a-z][a-z0-9_.]{0,63}`, a finite value) for this
/// attempt. The host keeps per name the count, sum, min, max and last value.
#[cfg(all(target_arch = "wasm32", any(target_env = "p1", target_env = "p2")))]
pub fn kpi(name: &str, value: f64) -> Result<(), Refused> {
    abi::kpi(name, value)
}

/// Reports how far the agent is: `done` in 0.0..=1.0 and a message of at most 256 bytes.
/// The host keeps the latest report only.
#[cfg(all(target_arch = "wasm32", any(target_env = "p1", target_env = "p2")))]
pub fn progress(done: f64, message: &str) -> Result<(), Refused> {
    abi::progress(done, message)
}

/// Submits a child task: `spec_json` is a `TaskSpec` as JSON (docs/api.md), such as
/// `{"module": "wordcount", "input": "some text"}`; its `after` may name ids this function
/// returned earlier in the same attempt. Returns the child's task id at once. The child
/// is created only if this attempt ends `ok` (exit code 0): when it fails, or is retried,
/// the children it submitted never exist.
#[cfg(all(target_arch = "wasm32", any(target_env = "p1", target_env = "p2")))]
pub fn submit(spec_json: &str) -> Result<String, Refused> {
    abi::submit(spec_json)
}

/// Why the host refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A core module's refusal code (see [`Refused::reason`] for its meaning): 1 to 6 for
    /// telemetry, -1 to -10 for [`submit`].
    Code(i32),
    /// A component's refusal: the host's message.
    Message(String),
}

impl Refused {
    /// The refusal code, for core modules.
    pub fn code(&self) -> Option<i32> {
        match self {
            Refused::Code(code) => Some(*code),
            Refused::Message(_) => None,
        }
    }

    /// What the refusal means, in words.
    pub fn reason(&self) -> &str {
        match self {
            Refused::Message(message) => message,
            Refused::Code(1) => "bad KPI name",
            Refused::Code(2) => "bad value",
            Refused::Code(3) => "bad progress message",
            Refused::Code(4) => "too many distinct KPI names",
            Refused::Code(5) => "too many telemetry calls",
            Refused::Code(6) => "bad pointer",
            Refused::Code(-1) => "child tasks not granted",
            Refused::Code(-2) => "too deep for child tasks",
            Refused::Code(-3) => "too many child tasks",
            Refused::Code(-4) => "bad pointer",
            Refused::Code(-5) => "spec too large",
            Refused::Code(-6) => "too many spec bytes",
            Refused::Code(-7) => "spec not UTF-8",
            Refused::Code(-8) => "malformed spec",
            Refused::Code(-9) => "spec refused by the host",
            Refused::Code(-10) => "id buffer too small",
            Refused::Code(_) => "unknown refusal",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Code(code) => write!(f, "refused by the host (code {code}: {})", self.reason()),
            Refused::Message(message) => write!(f, "refused by the host: {message}"),
        }
    }
}

impl std::error::Error for Refused {}

/// All of the task's input (stdin).
pub fn input() -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    io::stdin().lock().read_to_end(&mut input)?;
    Ok(input)
}

/// All of the task's input as text; an error when it is not UTF-8.
pub fn input_string() -> io::Result<String> {
    let mut input = String::new();
    io::stdin().lock().read_to_string(&mut input)?;
    Ok(input)
}

/// Writes `bytes` to the task's output (stdout) and flushes it.
pub fn output(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Writes `text` to the task's output (stdout) and flushes it.
pub fn output_str(text: &str) -> io::Result<()> {
    output(text.as_bytes())
}

/// The task's arguments, after the program name.
pub fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}
