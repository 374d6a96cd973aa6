//! Command-line arguments of every `fabric` command, as API.md lists them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The Execution Fabric: run WebAssembly agents you did not write, safely and durably.
#[derive(Debug, Parser)]
#[command(name = "fabric", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FABRIC_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one attempt of an agent in-process, with no server and no store.
    ///
    /// Exit status: 0 when the outcome is `ok`, 1 for any other outcome, 2 for bad usage
    /// or an unreadable module.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent: a WASI preview 1 module or preview 2 component (`.wasm`), or WebAssembly
    /// text (`.wat`).
    pub module: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Environment variable granted to the agent, `NAME=VALUE` (repeatable). Nothing from
    /// the host's environment is ever passed.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Print exactly one JSON object, the attempt, on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct InputArgs {
    /// The input, fed to the agent on stdin.
    #[arg(long)]
    pub input: Option<String>,
    /// Read the input from FILE (`-` for this process's stdin).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Fuel budget (about one unit per Wasm instruction). [default: 10000000000]
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit for the whole instance: 65536, 64KiB, 16MiB, 1GiB. [default: 64MiB]
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Wall-clock timeout, instantiation included: 1500ms, 2s, 1m. [default: 30s]
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Most stdout kept as the output; the rest is discarded. [default: 1MiB]
    #[arg(long, value_parser = parse_size)]
    pub output_limit: Option<u64>,
    /// Most stderr kept as the log. [default: 64KiB]
    #[arg(long, value_parser = parse_size)]
    pub log_limit: Option<u64>,
}

impl LimitArgs {
    /// The limits named on the command line, defaults for the rest.
    pub fn to_limits(&self) -> fabric_types::Limits {
        let defaults = fabric_types::Limits::default();
        fabric_types::Limits {
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self.memory.unwrap_or(defaults.memory_bytes),
            timeout_ms: self
                .timeout
                .map_or(defaults.timeout_ms, |t| t.as_millis() as u64),
            output_bytes: self.output_limit.unwrap_or(defaults.output_bytes),
            log_bytes: self.log_limit.unwrap_or(defaults.log_bytes),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    fabric_types::parse_size(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fabric_types::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_env_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn input_and_input_file_exclude_each_other() {
        let err = Cli::try_parse_from([
            "fabric",
            "run",
            "a.wasm",
            "--input",
            "x",
            "--input-file",
            "f",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn limits_parse_units_and_default_the_rest() {
        let cli = Cli::try_parse_from([
            "fabric",
            "run",
            "a.wasm",
            "--memory",
            "16MiB",
            "--timeout",
            "1500ms",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        let limits = args.limits.to_limits();
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.timeout_ms, 1500);
        assert_eq!(limits.fuel, fabric_types::Limits::DEFAULT_FUEL);
        assert!(Cli::try_parse_from(["fabric", "run", "a.wasm", "--memory", "lots"]).is_err());
    }
}
