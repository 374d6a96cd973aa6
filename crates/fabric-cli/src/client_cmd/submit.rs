//! `fabric submit`: one task, or --count copies in batches, optionally waiting for them.

use std::process::ExitCode;

use fabric_client::Client;
use fabric_types::text_or_base64;
use fabric_types::wire::{LimitsSpec, RetrySpec, Submitted, Task, TaskSpec};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::{Failure, emit, emit_json, exit_for, format, read_input, run, wait_for};
use crate::args::{LimitArgs, SubmitArgs};

/// Most tasks in one `task.submit_batch` (the reference server takes up to 10,000).
const SUBMIT_BATCH: usize = 500;
/// Most `task.wait` calls in flight while waiting for many tasks.
const WAITS_IN_FLIGHT: usize = 16;

pub fn main(args: SubmitArgs) -> ExitCode {
    run(&args.client, async |client| {
        let input = read_input(&args.input).map_err(Failure::Usage)?;
        let spec = task_spec(&args, &input);
        if args.count == 1 {
            submit_one(&client, &spec, &args).await
        } else {
            submit_many(&client, &spec, &args).await
        }
    })
}

async fn submit_one(
    client: &Client,
    spec: &TaskSpec,
    args: &SubmitArgs,
) -> Result<ExitCode, Failure> {
    let submitted = client.task_submit(spec).await?;
    if !args.wait {
        if args.client.json {
            emit_json(json!(submitted));
        } else {
            emit(&format::submitted_table(std::slice::from_ref(&submitted)));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let task = wait_for(client, &submitted.id, None).await?;
    if args.client.json {
        emit_json(json!(task));
    } else {
        emit(&format::task_detail(&task));
    }
    Ok(exit_for(std::slice::from_ref(&task)))
}

async fn submit_many(
    client: &Client,
    spec: &TaskSpec,
    args: &SubmitArgs,
) -> Result<ExitCode, Failure> {
    let specs = copies(spec, args.count);
    let total = specs.len() as u64;

    let bar = progress(total, "submitting");
    let mut submitted: Vec<Submitted> = Vec::with_capacity(specs.len());
    for batch in specs.chunks(SUBMIT_BATCH) {
        let answers = client.task_submit_batch(batch.to_vec()).await;
        let answers = answers.inspect_err(|_| bar.abandon())?;
        bar.inc(answers.len() as u64);
        submitted.extend(answers);
    }
    bar.finish_and_clear();
    let deduplicated = submitted.iter().filter(|s| s.deduplicated).count();

    if !args.wait {
        if args.client.json {
            emit_json(json!({ "tasks": submitted }));
        } else {
            emit(&format::submitted_table(&submitted));
            eprintln!("submitted {total} tasks ({deduplicated} deduplicated)");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let bar = progress(total, "finished");
    let waits = submitted.iter().enumerate().map(|(index, s)| {
        let bar = &bar;
        async move {
            let task = wait_for(client, &s.id, None).await;
            bar.inc(1);
            task.map(|task| (index, task))
        }
    });
    let mut finished: Vec<(usize, Task)> = Vec::with_capacity(submitted.len());
    let mut waits = futures_util::stream::iter(waits).buffer_unordered(WAITS_IN_FLIGHT);
    while let Some(result) = waits.next().await {
        finished.push(result.inspect_err(|_| bar.abandon())?);
    }
    bar.finish_and_clear();
    finished.sort_by_key(|(index, _)| *index);
    let tasks: Vec<Task> = finished.into_iter().map(|(_, task)| task).collect();

    if args.client.json {
        emit_json(json!({ "tasks": tasks }));
    } else {
        emit(&format::tasks_table(&tasks));
        eprintln!("{}", state_summary(&tasks));
    }
    Ok(exit_for(&tasks))
}

/// `100 tasks: 98 succeeded, 2 failed`.
fn state_summary(tasks: &[Task]) -> String {
    let mut counts: Vec<(fabric_types::TaskState, usize)> = Vec::new();
    for task in tasks {
        match counts.iter_mut().find(|(state, _)| *state == task.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((task.state, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    format!("{} tasks: {}", tasks.len(), parts.join(", "))
}

/// A bar on stderr, drawn only when stderr is a terminal.
fn progress(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({eta} left)")
        .expect("a valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// `count` copies of `spec`; an idempotency key K becomes K-0 .. K-(count-1), so the
/// copies stay distinct and a resubmission of the same command is still harmless.
fn copies(spec: &TaskSpec, count: u64) -> Vec<TaskSpec> {
    (0..count)
        .map(|index| {
            let mut copy = spec.clone();
            if let Some(key) = &spec.idempotency_key {
                copy.idempotency_key = Some(format!("{key}-{index}"));
            }
            copy
        })
        .collect()
}

/// The TaskSpec the command line describes; what it leaves out takes the server's defaults.
pub(super) fn task_spec(args: &SubmitArgs, input: &[u8]) -> TaskSpec {
    let (input, input_base64) = if input.is_empty() {
        (None, None)
    } else {
        text_or_base64(input)
    };
    TaskSpec {
        module: args.module.clone(),
        input,
        input_base64,
        priority: args.priority,
        limits: limits_spec(&args.limits),
        retry: args.max_attempts.map(|n| RetrySpec {
            max_attempts: Some(n),
            ..RetrySpec::default()
        }),
        idempotency_key: args.idempotency_key.clone(),
        run_at: args.run_at,
        deadline: args.deadline,
        env: args.env.iter().cloned().collect(),
        labels: args.labels.iter().cloned().collect(),
        dirs: args.dirs.iter().cloned().collect(),
        egress: args.egress.clone(),
        args: args.args.clone(),
        after: args.after.clone(),
        pass_outputs: args.pass_outputs,
        concurrency: args
            .concurrency
            .clone()
            .map(|(key, limit)| fabric_types::Concurrency { key, limit }),
    }
}

/// Only the limits named on the command line; `None` when there are none.
fn limits_spec(limits: &LimitArgs) -> Option<LimitsSpec> {
    let spec = LimitsSpec {
        fuel: limits.fuel,
        memory_bytes: limits.memory,
        timeout_ms: limits
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        output_bytes: limits.output_limit,
        log_bytes: limits.log_limit,
    };
    (spec != LimitsSpec::default()).then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser as _;

    fn submit_args(extra: &[&str]) -> SubmitArgs {
        let cli = Cli::try_parse_from(["fabric", "submit", "echo"].iter().chain(extra)).unwrap();
        let Command::Submit(args) = cli.command else {
            panic!("not a submit command")
        };
        args
    }

    #[test]
    fn the_spec_carries_only_what_the_command_line_names() {
        let spec = task_spec(&submit_args(&[]), b"");
        assert_eq!(
            spec,
            TaskSpec {
                module: "echo".into(),
                ..TaskSpec::default()
            }
        );
        let args = submit_args(&[
            "--priority",
            "high",
            "--fuel",
            "1000",
            "--timeout",
            "2s",
            "--max-attempts",
            "3",
            "--env",
            "A=1",
            "--label",
            "team=x",
            "--run-at",
            "2030-01-01T00:00:00Z",
            "--idempotency-key",
            "k",
            "--dir",
            "/data=shared",
            "--dir",
            "/in/models=models",
            "--after",
            "A1",
            "--after",
            "B2",
            "--pass-outputs",
        ]);
        let spec = task_spec(&args, b"hi");
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            json!({
                "module": "echo", "input": "hi", "priority": "high",
                "limits": {"fuel": 1000, "timeout_ms": 2000},
                "retry": {"max_attempts": 3}, "idempotency_key": "k",
                "run_at": "2030-01-01T00:00:00Z", "env": {"A": "1"}, "labels": {"team": "x"},
                "dirs": {"/data": "shared", "/in/models": "models"},
                "after": ["A1", "B2"], "pass_outputs": true
            })
        );
    }

    #[test]
    fn binary_input_goes_as_base64() {
        let spec = task_spec(&submit_args(&[]), &[0xff, 0xfe, 0x00]);
        assert_eq!(spec.input, None);
        assert_eq!(spec.input_base64.as_deref(), Some("//4A"));
    }

    #[test]
    fn copies_get_distinct_idempotency_keys() {
        let spec = task_spec(&submit_args(&["--idempotency-key", "run7"]), b"");
        let keys: Vec<_> = copies(&spec, 3)
            .into_iter()
            .map(|s| s.idempotency_key.unwrap())
            .collect();
        assert_eq!(keys, ["run7-0", "run7-1", "run7-2"]);
        let plain = task_spec(&submit_args(&[]), b"");
        assert!(
            copies(&plain, 2)
                .iter()
                .all(|s| s.idempotency_key.is_none())
        );
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        for bad in [
            &["--priority", "urgent"][..],
            &["--count", "0"],
            &["--max-attempts", "0"],
            &["--run-at", "tomorrow"],
            &["--label", "novalue"],
            &["--dir", "/data"],
            &["--concurrency", "model-api"],
            &["--concurrency", "model-api=many"],
            &["--concurrency", "=3"],
        ] {
            let parsed = Cli::try_parse_from(["fabric", "submit", "echo"].iter().chain(bad));
            assert!(parsed.is_err(), "{bad:?}");
        }
    }
}
