//! `fabric schedule put | get | list | delete`: a server's cron schedules.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fabric_types::format_timestamp;
use fabric_types::wire::{Schedule, SchedulePut};
use serde_json::json;

use super::{Failure, emit, emit_json, format, read_input, run};
use crate::args::{ClientArgs, SubmitArgs};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create or replace the schedule NAME: at each tick of --cron (in --timezone), submit
    /// the task the rest of the command line describes, as `fabric submit` would. Each
    /// task is labelled schedule=NAME; after downtime only the latest missed tick fires.
    Put(Box<SchedulePutArgs>),
    /// One schedule: its cron, time zone, task, next tick and last task.
    Get(ScheduleNameArgs),
    /// The schedules, by name.
    #[command(alias = "ls")]
    List(ScheduleLsArgs),
    /// Delete a schedule (the tasks it created stay).
    #[command(alias = "rm")]
    Delete(ScheduleNameArgs),
}

#[derive(Debug, Args)]
pub struct SchedulePutArgs {
    /// The schedule's name: 1 to 64 letters, digits, `_`, `-` and `.`.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week) or six (second first),
    /// such as `0 3 * * *` (03:00 every day) or `*/10 * * * * *` (every 10 s).
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// The IANA time zone of the cron's local times, such as Europe/Paris. [default: UTC]
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// The task: the module, its input and every option of `fabric submit` (but --count,
    /// --wait, --run-at, --deadline and --idempotency-key, which a schedule's task cannot
    /// have).
    #[command(flatten)]
    pub task: SubmitArgs,
}

#[derive(Debug, Args)]
pub struct ScheduleNameArgs {
    /// The schedule's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ScheduleLsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn main(command: ScheduleCommand) -> ExitCode {
    match command {
        ScheduleCommand::Put(args) => run(&args.task.client, async |client| {
            if args.task.count != 1 || args.task.wait {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--count and --wait do not apply to a schedule: each tick submits one task"
                )));
            }
            let input = read_input(&args.task.input).map_err(Failure::Usage)?;
            let put = SchedulePut {
                name: args.name.clone(),
                cron: args.cron.clone(),
                task: super::submit::task_spec(&args.task, &input),
                timezone: args.timezone.clone(),
            };
            let stored = client.schedule_put(&put).await?;
            show(std::slice::from_ref(&stored), args.task.client.json, false);
            Ok(ExitCode::SUCCESS)
        }),
        ScheduleCommand::Get(args) => run(&args.client, async |client| {
            let schedule = client.schedule_get(&args.name).await?;
            show(std::slice::from_ref(&schedule), args.client.json, false);
            Ok(ExitCode::SUCCESS)
        }),
        ScheduleCommand::List(args) => run(&args.client, async |client| {
            let schedules = client.schedule_list().await?;
            show(&schedules, args.client.json, true);
            Ok(ExitCode::SUCCESS)
        }),
        ScheduleCommand::Delete(args) => run(&args.client, async |client| {
            let deleted = client.schedule_delete(&args.name).await?;
            if args.client.json {
                emit_json(deleted);
            } else {
                emit(&format!("deleted schedule {}\n", args.name));
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Schedules as a table, or as JSON: one schedule alone, or `{schedules: [...]}`.
fn show(schedules: &[Schedule], json: bool, list: bool) {
    if json {
        match schedules {
            [one] if !list => emit_json(json!(one)),
            _ => emit_json(json!({ "schedules": schedules })),
        }
        return;
    }
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                s.task.module.clone(),
                format_timestamp(s.next_run_at),
                s.last_task.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    emit(&format::table(
        &[
            "NAME",
            "CRON",
            "TIMEZONE",
            "MODULE",
            "NEXT RUN",
            "LAST TASK",
        ],
        &rows,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn put_takes_a_name_a_cron_and_the_options_of_submit() {
        let cli = Cli::try_parse_from([
            "fabric",
            "schedule",
            "put",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Paris",
            "--priority",
            "low",
            "--concurrency",
            "reports=2",
            "--input",
            "q",
            "report",
            "--",
            "--full",
        ])
        .unwrap();
        let Command::Schedule(ScheduleCommand::Put(args)) = cli.command else {
            panic!("not schedule put")
        };
        assert_eq!(args.name, "nightly");
        assert_eq!(args.cron, "0 3 * * *");
        assert_eq!(args.timezone.as_deref(), Some("Europe/Paris"));
        let spec = crate::client_cmd::submit::task_spec(&args.task, b"q");
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"module": "report", "input": "q", "priority": "low", "args": ["--full"],
                   "concurrency": {"key": "reports", "limit": 2}})
        );
        assert!(
            Cli::try_parse_from(["fabric", "schedule", "put", "n", "echo"]).is_err(),
            "--cron is required"
        );
        for alias in ["ls", "list"] {
            assert!(Cli::try_parse_from(["fabric", "schedule", alias]).is_ok());
        }
        for alias in ["rm", "delete"] {
            assert!(Cli::try_parse_from(["fabric", "schedule", alias, "n"]).is_ok());
        }
    }
}
