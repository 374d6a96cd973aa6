//! `fabric task get | wait | cancel | ls | retry`.

use std::process::ExitCode;
use std::time::Instant;

use fabric_types::wire::{Task, TaskList};
use futures_util::StreamExt as _;
use serde_json::json;

use super::{Failure, emit, emit_json, exit_for, format, run, wait_for};
use crate::args::{TaskCommand, TaskLsArgs, TaskWaitArgs};

/// Most `task.wait` calls in flight for `fabric task wait ID...`.
const WAITS_IN_FLIGHT: usize = 16;

pub fn main(command: TaskCommand) -> ExitCode {
    match command {
        TaskCommand::Get(args) => run(&args.client, async |client| {
            let task = client.task_get(&args.id).await?;
            show_one(&task, args.client.json);
            Ok(ExitCode::SUCCESS)
        }),
        TaskCommand::Cancel(args) => run(&args.client, async |client| {
            let task = client.task_cancel(&args.id).await?;
            if args.client.json {
                emit_json(json!(task));
            } else {
                emit(&format::tasks_table(std::slice::from_ref(&task)));
            }
            Ok(ExitCode::SUCCESS)
        }),
        TaskCommand::Retry(args) => run(&args.client, async |client| {
            let retried = client.task_retry(&args.id).await?;
            if args.client.json {
                emit_json(json!({
                    "id": retried.id,
                    "state": retried.state,
                    "deduplicated": retried.deduplicated,
                    "retry_of": args.id,
                }));
            } else {
                emit(&format::submitted_table(std::slice::from_ref(&retried)));
            }
            Ok(ExitCode::SUCCESS)
        }),
        TaskCommand::Wait(args) => wait(args),
        TaskCommand::Ls(args) => list(args),
    }
}

fn show_one(task: &Task, json: bool) {
    if json {
        emit_json(json!(task));
    } else {
        emit(&format::task_detail(task));
    }
}

fn wait(args: TaskWaitArgs) -> ExitCode {
    run(&args.client, async |client| {
        let deadline = args.timeout.map(|t| Instant::now() + t);
        let waits = args.ids.iter().map(|id| wait_for(&client, id, deadline));
        let tasks: Vec<Task> = futures_util::stream::iter(waits)
            .buffered(WAITS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        for task in tasks.iter().filter(|t| !t.state.is_terminal()) {
            eprintln!(
                "task {} is still {} after --timeout {}",
                task.id,
                task.state,
                format::duration_ms(args.timeout.map_or(0, |t| t.as_millis() as u64))
            );
        }
        match tasks.as_slice() {
            [task] => show_one(task, args.client.json),
            _ if args.client.json => tasks.iter().for_each(|task| emit_json(json!(task))),
            _ => emit(&format::tasks_table(&tasks)),
        }
        Ok(exit_for(&tasks))
    })
}

fn list(args: TaskLsArgs) -> ExitCode {
    run(&args.client, async |client| {
        let params = TaskList {
            state: args.state,
            module: args.module.clone(),
            labels: args.labels.iter().cloned().collect(),
            parent: args.parent.clone(),
            limit: args.limit,
            cursor: args.cursor.clone(),
        };
        let page = client.task_list(params).await.map_err(Failure::Server)?;
        if args.client.json {
            emit_json(json!(page));
        } else {
            emit(&format::tasks_table(&page.tasks));
            if let Some(cursor) = &page.next_cursor {
                eprintln!("more tasks: fabric task ls --cursor {cursor}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
