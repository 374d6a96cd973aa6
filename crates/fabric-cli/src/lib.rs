//! The `fabric` command line: argument definitions and one module per command.

mod args;
mod client_cmd;
mod demo_api;
mod demo_cmd;
mod load_cmd;
mod run_cmd;
mod serve_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

/// Exit status for bad usage or an unreadable module (docs/api.md).
pub const EXIT_USAGE: u8 = 2;

/// Parses the process arguments, runs the command and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Run(args) => run_cmd::main(args),
        Command::Module(command) => client_cmd::module(command),
        Command::Submit(args) => client_cmd::submit(args),
        Command::Task(command) => client_cmd::task(command),
        Command::Schedule(command) => client_cmd::schedule(command),
        Command::Usage(args) => client_cmd::usage(args),
        Command::Kpi(args) => client_cmd::kpi(args),
        Command::Token(command) => token_cmd::main(command),
        Command::Serve(args) => serve_cmd::main(args),
        Command::Demo(args) => demo_cmd::main(args),
        Command::Load(args) => load_cmd::main(args),
    }
}

fn init_logging(format: args::LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FABRIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        args::LogFormat::Text => builder.init(),
        args::LogFormat::Json => builder.json().init(),
    }
}
