//! `fabric demo`: starts a server on the embedded store, loads the example agents, runs a
//! mixed workload that shows priorities, a retry, a timeout and isolation, prints a
//! summary, then keeps serving for the client commands until Ctrl-C.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fabric_client::Client;
use fabric_server::{ServeError, Server, ServerConfig};
use fabric_types::wire::{LimitsSpec, RetrySpec, Task, TaskSpec};
use fabric_types::{Priority, TaskState};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::DemoArgs;
use crate::client_cmd::format;

/// Low-priority echo tasks submitted first, and critical ones submitted after them.
const LOW_TASKS: usize = 2000;
const CRITICAL_TASKS: usize = 50;
/// How many `task.wait` calls are in flight at once while the demo waits.
const WAITERS: usize = 64;

pub fn main(args: DemoArgs) -> ExitCode {
    let mut config = match ServerConfig::resolve(args.options.into()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    config.otel = match crate::serve_cmd::otel_from_env() {
        Ok(otel) => otel,
        Err(code) => return code,
    };
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
    match runtime.block_on(demo(config, args.once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err)
            if matches!(
                err.downcast_ref::<ServeError>(),
                Some(ServeError::Interrupted)
            ) =>
        {
            eprintln!("{err}");
            // Whatever still runs (the workload, a compilation) is abandoned, not awaited.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The egress policy the demo's fetch task names.
const DEMO_POLICY: &str = "demo-api";

async fn demo(mut config: ServerConfig, once: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let api = crate::demo_api::start().context("starting the demo's loopback API")?;
    let policy = fabric_sandbox::EgressPolicy::new(DEMO_POLICY, &[format!("http://{api}")])
        .and_then(|p| {
            p.header(
                "authorization",
                &format!("Bearer {}", crate::demo_api::TOKEN),
            )
        })
        .map_err(anyhow::Error::msg)?;
    config
        .egress
        .insert(DEMO_POLICY.to_string(), std::sync::Arc::new(policy));
    let server = Server::start(config).await?;
    server.announce();
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = if once {
        tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }))
    } else {
        tokio::spawn(server.run_until_signalled())
    };
    let client = Client::new(&url, None)?;
    println!(
        "Execution Fabric demo: serving {url}, data in {}",
        data_dir.display()
    );
    tokio::select! {
        worked = workload(&client, api) => worked?,
        // Only a signal stops the server before the workload is done: stop with it.
        served = &mut serving => return served.context("the server task")?.map_err(Into::into),
    }
    if once {
        let _ = stop_tx.send(());
    } else {
        println!();
        println!("The fabric keeps serving at {url}. Try, in another terminal:");
        println!("  cargo run --release -- task ls");
        println!("  cargo run --release -- submit echo --input hello --wait");
        println!("Ctrl-C drains and stops it.");
    }
    serving.await.context("the server task")??;
    Ok(())
}

fn spec(module: &str, input: &str, priority: Priority) -> TaskSpec {
    TaskSpec {
        module: module.to_owned(),
        input: Some(input.to_owned()),
        priority: Some(priority),
        ..TaskSpec::default()
    }
}

async fn workload(client: &Client, api: std::net::SocketAddr) -> anyhow::Result<()> {
    client
        .module_put(fabric_agents::p2::FETCH, Some("fetch"))
        .await
        .context("loading the fetch agent")?;
    for (name, bytes) in fabric_agents::p1::AGENTS {
        client
            .module_put(bytes, Some(name))
            .await
            .with_context(|| format!("loading the {name} agent"))?;
    }
    let names: Vec<&str> = fabric_agents::p1::AGENTS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    println!(
        "Loaded the example agents: {}, and fetch (a component)",
        names.join(", ")
    );

    let started = Instant::now();
    let low: Vec<TaskSpec> = (0..LOW_TASKS)
        .map(|i| spec("echo", &format!("low task {i}"), Priority::Low))
        .collect();
    let critical: Vec<TaskSpec> = (0..CRITICAL_TASKS)
        .map(|i| spec("sha256", &format!("critical task {i}"), Priority::Critical))
        .collect();
    let retry = TaskSpec {
        retry: Some(RetrySpec {
            max_attempts: Some(3),
            backoff_ms: Some(100),
            max_backoff_ms: None,
        }),
        ..spec("strict", "this is not JSON", Priority::Normal)
    };
    let timeout = TaskSpec {
        limits: Some(LimitsSpec {
            timeout_ms: Some(300),
            ..LimitsSpec::default()
        }),
        retry: Some(RetrySpec {
            max_attempts: Some(1),
            ..RetrySpec::default()
        }),
        ..spec("sleep", "10000", Priority::High)
    };
    let probe = spec(
        "probe",
        "read /etc/passwd\nenv\nconnect 127.0.0.1:7070",
        Priority::High,
    );
    let wordcount = spec(
        "wordcount",
        "the fabric runs code you did not write; the fabric keeps every attempt",
        Priority::Normal,
    );

    let fetch = TaskSpec {
        egress: vec![DEMO_POLICY.to_string()],
        ..spec(
            "fetch",
            &format!("GET http://{api}/weather\nGET http://169.254.169.254/latest/meta-data/"),
            Priority::High,
        )
    };

    let mut ids = Vec::new();
    for batch in [low, critical, vec![retry, timeout, probe, wordcount, fetch]] {
        let submitted = client.task_submit_batch(batch).await?;
        ids.extend(submitted.into_iter().map(|s| s.id));
    }
    println!(
        "Submitted {LOW_TASKS} low-priority echo tasks, then {CRITICAL_TASKS} critical sha256 tasks, a retry, a timeout, an isolation probe, a word count and an HTTP call under an egress policy."
    );
    let tasks = wait_all(client, &ids).await?;
    let took = started.elapsed();
    summarize(&tasks, took);
    Ok(())
}

/// Waits for every task, showing progress, and returns them in submission order.
async fn wait_all(client: &Client, ids: &[String]) -> anyhow::Result<Vec<Task>> {
    let bar = ProgressBar::with_draw_target(Some(ids.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("running");
    let mut finished: Vec<(usize, Task)> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(index, id)| {
            let bar = bar.clone();
            async move {
                loop {
                    let task = client.task_wait(id, Some(Duration::from_secs(30))).await?;
                    if task.state.is_terminal() {
                        bar.inc(1);
                        return Ok::<_, anyhow::Error>((index, task));
                    }
                }
            }
        })
        .buffer_unordered(WAITERS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    finished.sort_by_key(|(index, _)| *index);
    Ok(finished.into_iter().map(|(_, task)| task).collect())
}

fn wait_ms(task: &Task) -> Option<f64> {
    let finished = task.finished_at?;
    Some((finished - task.created_at).as_seconds_f64() * 1000.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn summarize(tasks: &[Task], took: Duration) {
    println!();
    println!("Priorities: the critical tasks were queued last and finished first.");
    let rows: Vec<Vec<String>> = [Priority::Critical, Priority::Low]
        .iter()
        .map(|priority| {
            // Only the first two batches carry these priorities.
            let of: Vec<&Task> = tasks.iter().filter(|t| t.priority == *priority).collect();
            let succeeded = of
                .iter()
                .filter(|t| t.state == TaskState::Succeeded)
                .count();
            let waits: Vec<f64> = of.iter().filter_map(|t| wait_ms(t)).collect();
            vec![
                priority.to_string(),
                of.len().to_string(),
                succeeded.to_string(),
                format!("{:.0} ms", median(waits)),
            ]
        })
        .collect();
    print!(
        "{}",
        format::table(
            &["PRIORITY", "TASKS", "SUCCEEDED", "MEDIAN SUBMIT->FINISH"],
            &rows
        )
    );
    let special = &tasks[LOW_TASKS + CRITICAL_TASKS..];
    let [retry, timeout, probe, wordcount, fetch] = special else {
        return;
    };
    println!();
    println!("Retries: strict on bad input, max_attempts 3, backoff 100 ms:");
    print!("{}", format::tasks_table(std::slice::from_ref(retry)));
    let outcomes: Vec<String> = retry.attempts.iter().map(format::outcome_cell).collect();
    println!("  attempts: {}", outcomes.join(", "));
    println!("Timeouts: sleep 10 s under a 300 ms timeout:");
    print!("{}", format::tasks_table(std::slice::from_ref(timeout)));
    println!("Isolation: the probe agent tries a host file, the environment and the network:");
    for line in probe.output.as_deref().unwrap_or("").lines() {
        println!("  {line}");
    }
    println!(
        "Output: wordcount says {}",
        wordcount.output.as_deref().unwrap_or("").trim()
    );
    println!(
        "Egress: the fetch component calls a loopback API under the policy {DEMO_POLICY} (the host adds its token), and tries the cloud metadata address:"
    );
    for line in fetch.output.as_deref().unwrap_or("").lines() {
        println!("  {line}");
    }
    let succeeded = tasks
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .count();
    println!();
    println!(
        "{} tasks, {succeeded} succeeded, in {:.2} s ({:.0} tasks/s end to end, waits included).",
        tasks.len(),
        took.as_secs_f64(),
        tasks.len() as f64 / took.as_secs_f64()
    );
}
