//! The arguments of `fabric load`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};
use fabric_types::Priority;

use crate::args::ServeFlags;

/// Arguments of `fabric load`.
#[derive(Debug, Args)]
#[command(group = ArgGroup::new("amount").args(["tasks", "duration"]))]
pub struct LoadArgs {
    /// The server to drive (not used with --embedded).
    #[arg(
        long = "server",
        value_name = "URL",
        env = "FABRIC_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// Bearer token for a server started with --auth.
    #[arg(long, value_name = "T", env = "FABRIC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Start a server in this process and drive it: the serve options below apply to it,
    /// it listens on 127.0.0.1:0 and keeps its data in a fresh temporary directory unless
    /// told otherwise. Its /metrics memory then includes this load generator.
    #[arg(long)]
    pub embedded: bool,
    /// Store the example agents (echo, sleep, sha256, wordcount, strict, probe, ...) under
    /// their names first. Implied by --embedded.
    #[arg(long)]
    pub load_agents: bool,
    /// The module every task runs: a name (echo, sleep, ...) or `sha256:<hex>`.
    #[arg(long, default_value = "echo")]
    pub module: String,
    /// Each task's input (the sleep agent reads milliseconds).
    #[arg(long, default_value = "hello")]
    pub input: String,
    /// Submit a mix instead of one spec: in a fixed rotation, tasks that succeed, exit
    /// non-zero, trap, time out, are retried three times, are cancelled (by this command,
    /// with task.cancel), run later (run_at), expire (a deadline before their run_at) and
    /// echo 64 KiB. Each task is checked to end as its kind must; a task lost, unfinished
    /// or ended otherwise makes the exit status 1. Needs the example agents (--load-agents).
    #[arg(long, conflicts_with_all = ["module", "input", "read_back"])]
    pub mix: bool,
    /// critical, high, normal, low or background. [default: the server's, normal]
    #[arg(long, value_parser = parse_priority)]
    pub priority: Option<Priority>,
    /// How many tasks to submit. [default: 10000 unless --duration]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Keep submitting until this much time has passed (1500ms, 30s, 3m), then wait for
    /// the submitted tasks to finish.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Submit calls in flight at once.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Tasks per `task.submit_batch` call; 1 submits each with `task.submit`.
    #[arg(long, value_name = "B", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// The most submitted tasks not yet finished: submitters wait beyond it, which bounds
    /// the queue in a soak (and, at 1, runs one task at a time). Raised to --batch when
    /// smaller.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending: u64,
    /// Do not subscribe to task events during the run: wait for the server's counts of
    /// finished tasks (`fabric.stats`), then read the tasks back with `task.list`, 1000 a
    /// page. The server does no work for the measurement while the run lasts, but it must
    /// be this run's alone (other clients' tasks of the same module would be counted).
    #[arg(long, conflicts_with = "duration")]
    pub read_back: bool,
    /// Also sample the size of this file plus its `-wal` every second (the server's
    /// SQLite database). [default with --embedded: its store]
    #[arg(long, value_name = "PATH")]
    pub db_file: Option<PathBuf>,
    /// Write a sample every --sample-every to this file, one JSON object a line: the
    /// seconds since the start, the server's RSS and open file descriptors (from /metrics),
    /// the store's size (--db-file), and the tasks finished in the interval and per second.
    /// The report gives the growth of each from the tenth line to the last.
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
    /// How often a line is written to --samples.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Print exactly one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    // Boxed: `fabric`'s commands are the variants of one enum, which this would make
    // too large.
    #[command(flatten, next_help_heading = "Embedded server (with --embedded)")]
    pub serve: Box<ServeFlags>,
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse()
        .map_err(|e: fabric_types::ParsePriorityError| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fabric_types::parse_duration(text).map_err(|e| e.to_string())
}
