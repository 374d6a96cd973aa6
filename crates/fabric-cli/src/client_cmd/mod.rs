//! The client commands (`module`, `submit`, `task`, `schedule`): each calls a server's JSON-RPC API
//! through `fabric-client` and prints the answer as a table or as one JSON object.

pub(crate) mod format;
mod report;
mod schedule;
mod submit;
mod task;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fabric_client::{Client, ClientError};
use fabric_types::TaskState;
use fabric_types::wire::{ModuleListResult, Task};
use serde_json::json;

use crate::EXIT_USAGE;
use crate::args::{ClientArgs, ModuleCommand};
use crate::run_cmd::{read_input, read_module};

pub use report::{kpi, usage};
pub use schedule::{ScheduleCommand, main as schedule};
pub use submit::main as submit;
pub use task::main as task;

/// Why a client command stopped early.
#[derive(Debug)]
enum Failure {
    /// Bad usage or an unreadable file: exit status 2.
    Usage(anyhow::Error),
    /// The server refused the call or could not be reached: exit status 1.
    Server(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Server(error)
    }
}

/// Connects to the server of `args`, runs `command` on a single-threaded runtime and
/// turns a failure into one line on stderr and its exit status.
fn run<F>(args: &ClientArgs, command: F) -> ExitCode
where
    F: AsyncFnOnce(Client) -> Result<ExitCode, Failure>,
{
    let client =
        match Client::with_ca_cert(&args.server, args.token.clone(), args.ca_cert.as_deref()) {
            Ok(client) => client,
            Err(error) => return report(&args.server, Failure::Usage(error.into())),
        };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a single-threaded tokio runtime");
    let url = client.url().to_owned();
    match runtime.block_on(command(client)) {
        Ok(code) => code,
        Err(failure) => report(&url, failure),
    }
}

fn report(url: &str, failure: Failure) -> ExitCode {
    match failure {
        Failure::Usage(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
        // A transport error already names the URL it could not reach.
        Failure::Server(error @ ClientError::Transport { .. }) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Failure::Server(error) => {
            eprintln!("error: server {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (`fabric task ls | head`).
fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// One JSON value on one line of stdout (build it with `json!(value)`).
fn emit_json(value: serde_json::Value) {
    emit(&(value.to_string() + "\n"));
}

/// 0 when every task succeeded, 1 otherwise.
fn exit_for(tasks: &[Task]) -> ExitCode {
    if tasks.iter().all(|t| t.state == TaskState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How long one `task.wait` call asks the server to wait; a longer wait is several calls.
const WAIT_CALL: Duration = Duration::from_secs(60);
/// A pause between `task.wait` calls that came back early with the task still running
/// (a draining server answers at once), so such a server is not asked in a tight loop.
const EARLY_ANSWER_PAUSE: Duration = Duration::from_millis(200);

/// The task once it is terminal, or as it is at `deadline`.
async fn wait_for(
    client: &Client,
    id: &str,
    deadline: Option<Instant>,
) -> Result<Task, ClientError> {
    loop {
        let left = deadline.map_or(WAIT_CALL, |d| d.saturating_duration_since(Instant::now()));
        let asked = left.min(WAIT_CALL);
        let started = Instant::now();
        let task = client.task_wait(id, Some(asked)).await?;
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if task.state.is_terminal() || out_of_time {
            return Ok(task);
        }
        if started.elapsed() < asked / 2 {
            tokio::time::sleep(EARLY_ANSWER_PAUSE).await;
        }
    }
}

pub fn module(command: ModuleCommand) -> ExitCode {
    match command {
        ModuleCommand::Put(args) => run(&args.client, async |client| {
            let wasm = read_module(&args.file).map_err(Failure::Usage)?;
            let stored = client.module_put(&wasm, args.name.as_deref()).await?;
            if args.client.json {
                emit_json(json!(stored));
            } else {
                let row = vec![
                    stored.module.clone(),
                    stored.kind.to_string(),
                    format::bytes(stored.size),
                    args.name.clone().unwrap_or_else(|| "-".to_owned()),
                ];
                emit(&format::table(&["MODULE", "KIND", "SIZE", "NAME"], &[row]));
            }
            Ok(ExitCode::SUCCESS)
        }),
        ModuleCommand::Ls(args) => run(&args.client, async |client| {
            let modules = client.module_list().await?;
            if args.client.json {
                emit_json(json!(ModuleListResult { modules }));
            } else {
                emit(&format::modules_table(&modules));
            }
            Ok(ExitCode::SUCCESS)
        }),
        ModuleCommand::Rm(args) => run(&args.client, async |client| {
            let deleted = client.module_delete(&args.module).await?;
            if args.client.json {
                emit_json(json!(deleted));
            } else {
                emit(&format::modules_table(std::slice::from_ref(&deleted)));
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}
