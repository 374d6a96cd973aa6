//! `fabric load`: drives a server (or one started in-process) with a stream of tasks (or a mix of kinds, each checked to end as it must) and reports throughput, latency percentiles, attempt outcomes and the server's memory, open files and store size over time.
//!
//! How it measures without the measurement dominating: the tasks' terminal events come
//! over one WebSocket `task.subscribe`, each carrying its attempt's `started_at` and
//! `finished_at`; a task's `created_at` is the time part of its id (checked once against
//! `task.get` on a warm-up task, with the client's clock as the fallback); the latencies
//! go into log-linear histograms of fixed size. Only the tasks submitted and not yet
//! finished are kept, and `--max-pending` bounds them, so a soak of millions of tasks runs
//! in constant memory. A task whose event the server skipped (a subscriber that falls
//! behind loses events) is read back with `task.get` once the run stalls or the task is a
//! minute old; with `--mix`, so is a task whose events say it ended otherwise than its
//! kind must, before it counts as a mismatch.

mod args;
mod driver;
mod embedded;
mod histogram;
mod mix;
mod report;
mod sampler;
mod tally;

use std::process::ExitCode;

use fabric_client::ClientError;

use crate::EXIT_USAGE;

pub use args::LoadArgs;

/// Why `fabric load` stopped before its report.
#[derive(Debug)]
enum Failure {
    /// Bad usage: exit status 2.
    Usage(anyhow::Error),
    /// The server refused a call or could not be reached: exit status 1.
    Server(String, ClientError),
    /// Anything else that ended the run: exit status 1.
    Run(anyhow::Error),
}

pub fn main(args: LoadArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match runtime.block_on(driver::load(args)) {
        Ok(report) => {
            let text = if json {
                report.to_json().to_string() + "\n"
            } else {
                report.table()
            };
            print!("{text}");
            let problems = report.problems();
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(Failure::Usage(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
        // A transport error already names the URL it could not reach.
        Err(Failure::Server(_, error @ ClientError::Transport { .. })) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::Server(url, error)) => {
            eprintln!("error: server {url}: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::Run(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
