//! `fabric load`: drives a server (or one started in-process) with a stream of tasks and reports throughput, latency percentiles, attempt outcomes and the server's memory over time.
//!
//! How it measures without the measurement dominating: the tasks' terminal events come
//! over one WebSocket `task.subscribe`, each carrying its attempt's `started_at` and
//! `finished_at`; a task's `created_at` is the time part of its id (checked once against
//! `task.get` on a warm-up task, with the client's clock as the fallback); the latencies
//! go into log-linear histograms of fixed size. Only the tasks submitted and not yet
//! finished are kept, and `--max-pending` bounds them, so a soak of millions of tasks runs
//! in constant memory. A task whose event the server skipped (a subscriber that falls
//! behind loses events) is read back with `task.get` once the run stalls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args};
use fabric_client::{Client, ClientError, TaskEventNotice};
use fabric_server::{Server, ServerConfig, StoreUrl};
use fabric_types::wire::{Task, TaskSpec};
use fabric_types::{Outcome, Priority, TaskState};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::EXIT_USAGE;
use crate::args::ServeFlags;
use crate::client_cmd::format;

/// Tasks submitted when neither --tasks nor --duration is given.
const DEFAULT_TASKS: u64 = 10_000;
/// How often the server's `/metrics` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Most samples kept in a series; past it every other one is dropped and the spacing of
/// new ones doubles, so a long soak keeps a bounded, evenly spaced series.
const MAX_SERIES: usize = 3600;
/// With tasks pending, this long without an acknowledgement or a finished task is a stall:
/// pending tasks are then read back with `task.get`, in case their events were skipped.
const STALL: Duration = Duration::from_secs(1);
/// Most tasks read back in one JSON-RPC batch of `task.get` calls.
const RECONCILE_BATCH: usize = 1000;
/// Events of tasks this run has not (yet) submitted are kept this long for the
/// acknowledgement that names them, then dropped (they belong to another client).
const EARLY_EVENT_TTL: Duration = Duration::from_secs(60);
/// How long the warm-up task may take.
const WARM_UP_WAIT: Duration = Duration::from_secs(60);
/// How often the progress bar and the stall check run.
const TICK: Duration = Duration::from_millis(200);

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
    /// Store the example agents (echo, sleep, sha256, wordcount, strict, probe) under their
    /// names first. Implied by --embedded.
    #[arg(long)]
    pub load_agents: bool,
    /// The module every task runs: a name (echo, sleep, ...) or `sha256:<hex>`.
    #[arg(long, default_value = "echo")]
    pub module: String,
    /// Each task's input (the sleep agent reads milliseconds).
    #[arg(long, default_value = "hello")]
    pub input: String,
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
    /// Print exactly one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten, next_help_heading = "Embedded server (with --embedded)")]
    pub serve: ServeFlags,
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse()
        .map_err(|e: fabric_types::ParsePriorityError| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fabric_types::parse_duration(text).map_err(|e| e.to_string())
}

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
    match runtime.block_on(load(args)) {
        Ok(report) => {
            let text = if json {
                report.to_json().to_string() + "\n"
            } else {
                report.table()
            };
            print!("{text}");
            ExitCode::SUCCESS
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

/// A server started in this process, stopped when the run is over.
struct Embedded {
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), fabric_server::ServeError>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Embedded {
    /// Starts a server on `options`, listening on 127.0.0.1:0 and keeping its data in a
    /// fresh temporary directory unless they say otherwise. Returns it, its URL and its
    /// SQLite database.
    async fn start(mut options: ServeFlags) -> Result<(Self, String, Option<PathBuf>), Failure> {
        let data_dir = match options.data_dir {
            Some(_) => None,
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fabric-load-")
                    .tempdir()
                    .map_err(|e| {
                        Failure::Run(anyhow::anyhow!(
                            "cannot create a temporary data directory: {e}"
                        ))
                    })?;
                options.data_dir = Some(dir.path().to_owned());
                Some(dir)
            }
        };
        options
            .listen
            .get_or_insert_with(|| "127.0.0.1:0".parse().expect("a valid address"));
        let config = ServerConfig::resolve(options.into()).map_err(|e| Failure::Usage(e.into()))?;
        let db = match &config.store {
            StoreUrl::Sqlite(path) => Some(path.clone()),
            StoreUrl::Postgres { .. } => None,
        };
        let server = Server::start(config)
            .await
            .map_err(|e| Failure::Run(anyhow::anyhow!("cannot start the embedded server: {e}")))?;
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let embedded = Self {
            stop,
            serving,
            _data_dir: data_dir,
        };
        Ok((embedded, url, db))
    }

    async fn stop(self) -> Result<(), Failure> {
        let _ = self.stop.send(());
        match self.serving.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Run(anyhow::anyhow!(
                "the embedded server failed: {e}"
            ))),
            Err(e) => Err(Failure::Run(anyhow::anyhow!(
                "the embedded server panicked: {e}"
            ))),
        }
    }
}

/// What to submit and how.
#[derive(Debug, Clone)]
struct Plan {
    spec: TaskSpec,
    batch: u64,
    concurrency: u32,
    window: u64,
    amount: Amount,
    read_back: bool,
}

#[derive(Debug, Clone, Copy)]
enum Amount {
    Tasks(u64),
    Duration(Duration),
}

async fn load(args: LoadArgs) -> Result<Report, Failure> {
    let amount = match (args.tasks, args.duration) {
        (_, Some(duration)) => Amount::Duration(duration),
        (Some(tasks), None) => Amount::Tasks(tasks),
        (None, None) => Amount::Tasks(DEFAULT_TASKS),
    };
    let plan = Plan {
        spec: TaskSpec {
            module: args.module.clone(),
            input: Some(args.input.clone()),
            priority: args.priority,
            ..TaskSpec::default()
        },
        batch: u64::from(args.batch),
        concurrency: args.concurrency,
        window: args.max_pending.max(u64::from(args.batch)),
        amount,
        read_back: args.read_back,
    };
    let (embedded, url, db_file) = if args.embedded {
        let (embedded, url, db) = Embedded::start(args.serve).await?;
        (Some(embedded), url, args.db_file.or(db))
    } else {
        (None, args.server.clone(), args.db_file)
    };
    let client = Client::new(&url, args.token.clone()).map_err(|e| Failure::Usage(e.into()))?;
    let client = Arc::new(client);
    let url = client.url().to_owned();
    let server_error = |error: ClientError| Failure::Server(url.clone(), error);

    let outcome = async {
        // Reaching the server at all, before anything else.
        client.stats().await.map_err(server_error)?;
        if args.embedded || args.load_agents {
            for (name, bytes) in fabric_agents::p1::AGENTS {
                client
                    .module_put(bytes, Some(name))
                    .await
                    .map_err(server_error)?;
            }
        }
        let warm = warm_up(&client, &plan.spec).await.map_err(server_error)?;
        drive(client.clone(), &plan, &warm, db_file).await
    }
    .await;
    let report = match outcome {
        Ok(mut report) => {
            report.server = url.clone();
            report.embedded = args.embedded;
            report.module = args.module;
            Ok(report)
        }
        Err(failure) => Err(failure),
    };
    if let Some(embedded) = embedded {
        let stopped = embedded.stop().await;
        if report.is_ok() {
            stopped?;
        }
    }
    report
}

/// Runs one task of the plan to its end, so the module is compiled and cached before the
/// measurement; it is not counted.
async fn warm_up(client: &Client, spec: &TaskSpec) -> Result<Task, ClientError> {
    let submitted = client.task_submit(spec).await?;
    client.task_wait(&submitted.id, Some(WARM_UP_WAIT)).await
}

/// Whether `task`'s id carries its `created_at`: the fabric's ids start with 48 bits of
/// milliseconds since the epoch, the same instant as `created_at`.
fn id_carries_created_at(task: &Task) -> bool {
    id_unix_ms(&task.id) == Some(unix_ms(task.created_at))
}

/// Crockford's base32 alphabet, in which the fabric writes its 128-bit ids.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The milliseconds since the Unix epoch in the top 48 bits of a 26-character Crockford
/// base32 id; `None` for any other id.
fn id_unix_ms(id: &str) -> Option<i64> {
    if id.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (index, byte) in id.bytes().enumerate() {
        let digit = CROCKFORD
            .iter()
            .position(|&c| c == byte.to_ascii_uppercase())?;
        // 26 digits hold 130 bits: the first may only use its low 3.
        if index == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | digit as u128;
    }
    i64::try_from(value >> 80).ok()
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// What a submitter tells the collector.
enum Submission {
    /// The ids of the tasks one call stored, in order, and when the call was sent.
    Acked {
        ids: Vec<String>,
        sent: Instant,
        took: Duration,
    },
    /// A call failed: the run stops.
    Failed(ClientError),
}

/// The tasks still to submit, shared by the submitters.
struct Quota {
    left: AtomicU64,
    until: Option<Instant>,
}

impl Quota {
    /// Claims up to `batch` tasks; 0 when there are none left.
    fn claim(&self, batch: u64) -> u64 {
        if let Some(until) = self.until {
            return if Instant::now() < until { batch } else { 0 };
        }
        let mut taken = 0;
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                taken = left.min(batch);
                Some(left - taken)
            });
        taken
    }

    /// Gives back tasks claimed but not submitted.
    fn unclaim(&self, count: u64) {
        if self.until.is_none() {
            self.left.fetch_add(count, Ordering::Relaxed);
        }
    }

    fn is_over(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() >= until)
    }
}

/// One submitter: claims tasks, waits for room in the window, submits them and reports.
async fn submitter(
    client: Arc<Client>,
    spec: TaskSpec,
    batch: u64,
    quota: Arc<Quota>,
    window: Arc<Semaphore>,
    tx: mpsc::Sender<Submission>,
) {
    loop {
        let count = quota.claim(batch);
        if count == 0 {
            return;
        }
        let permits = u32::try_from(count).expect("a batch fits in u32");
        let Ok(permit) = window.acquire_many(permits).await else {
            return;
        };
        permit.forget();
        if quota.is_over() {
            window.add_permits(count as usize);
            quota.unclaim(count);
            return;
        }
        let sent = Instant::now();
        let result = if batch == 1 {
            client.task_submit(&spec).await.map(|s| vec![s.id])
        } else {
            let specs = vec![spec.clone(); count as usize];
            client
                .task_submit_batch(specs)
                .await
                .map(|submitted| submitted.into_iter().map(|s| s.id).collect())
        };
        let message = match result {
            Ok(ids) => Submission::Acked {
                ids,
                sent,
                took: sent.elapsed(),
            },
            Err(error) => Submission::Failed(error),
        };
        let failed = matches!(message, Submission::Failed(_));
        if tx.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Submits the plan, follows every task to its end and returns the report.
async fn drive(
    client: Arc<Client>,
    plan: &Plan,
    warm: &Task,
    db_file: Option<PathBuf>,
) -> Result<Report, Failure> {
    let url = client.url().to_owned();
    let server_error = |error: ClientError| Failure::Server(url.clone(), error);
    let (mut events, finished_before) = if plan.read_back {
        let stats = client.stats().await.map_err(server_error)?;
        (None, terminal_count(&stats))
    } else {
        let events = client.subscribe(None).await.map_err(server_error)?;
        (Some(events), 0)
    };
    // With --read-back: tasks the server counts finished since the run began.
    let mut finished_on_server = 0;

    let sampler = Sampler::new(&url, db_file);
    let (stop_sampling, sampling_stopped) = oneshot::channel::<()>();
    let sampling = tokio::spawn(sampler.run(sampling_stopped));

    let started = Instant::now();
    let created_from_id = !plan.read_back && id_carries_created_at(warm);
    let mut tally = Tally::new(created_from_id, Clock::now());
    let quota = Arc::new(Quota {
        left: AtomicU64::new(match plan.amount {
            Amount::Tasks(n) => n,
            Amount::Duration(_) => 0,
        }),
        until: match plan.amount {
            Amount::Tasks(_) => None,
            Amount::Duration(d) => Some(started + d),
        },
    });
    let window = Arc::new(Semaphore::new(
        usize::try_from(plan.window).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let (tx, mut submissions) = mpsc::channel::<Submission>(plan.concurrency as usize * 2);
    let submitters: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            tokio::spawn(submitter(
                client.clone(),
                plan.spec.clone(),
                plan.batch,
                quota.clone(),
                window.clone(),
                tx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let bar = progress(plan.amount);

    let mut submitting = true;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), Failure> = loop {
        let all_finished = if plan.read_back {
            finished_on_server >= tally.submitted
        } else {
            tally.pending.is_empty()
        };
        if !submitting && all_finished {
            break Ok(());
        }
        tokio::select! {
            submission = submissions.recv(), if submitting => match submission {
                Some(Submission::Acked { ids, took, .. }) if plan.read_back => {
                    tally.count_submitted(ids.len(), took, Instant::now());
                }
                Some(Submission::Acked { ids, sent, took }) => {
                    let done = tally.acked(ids, sent, took, Instant::now());
                    window.add_permits(done);
                }
                Some(Submission::Failed(error)) => break Err(server_error(error)),
                None => submitting = false,
            },
            event = async { events.as_mut().expect("subscribed").next().await }, if events.is_some() => match event {
                Some(Ok(notice)) => {
                    let done = tally.event(notice, Instant::now());
                    window.add_permits(done);
                }
                Some(Err(error)) => break Err(server_error(error)),
                None => break Err(Failure::Run(anyhow::anyhow!(
                    "server {url}: the server closed the task.subscribe WebSocket"
                ))),
            },
            _ = tick.tick() => {
                bar.set_message(format!("submitted {}", tally.submitted));
                if plan.read_back {
                    let stats = match client.stats().await {
                        Ok(stats) => stats,
                        Err(error) => break Err(server_error(error)),
                    };
                    let now_finished = terminal_count(&stats).saturating_sub(finished_before);
                    window.add_permits(now_finished.saturating_sub(finished_on_server) as usize);
                    finished_on_server = finished_on_server.max(now_finished);
                    bar.set_position(finished_on_server);
                    continue;
                }
                bar.set_position(tally.finished);
                let now = Instant::now();
                if now.duration_since(tally.last_progress) >= STALL {
                    match reconcile(&client, &mut tally, now).await {
                        Ok(done) => window.add_permits(done),
                        Err(error) => break Err(server_error(error)),
                    }
                }
                tally.forget_early_events(now);
            }
        }
    };
    for submitter in &submitters {
        submitter.abort();
    }
    drop(events);
    let elapsed = started.elapsed();
    let _ = stop_sampling.send(());
    let samples = sampling.await.unwrap_or_default();
    let result = match result {
        Ok(()) if plan.read_back => {
            bar.set_message("reading the tasks back");
            read_back(&client, &mut tally, warm)
                .await
                .map_err(server_error)
        }
        other => other,
    };
    match &result {
        Ok(()) => bar.finish_and_clear(),
        Err(_) => bar.abandon(),
    }
    result?;
    Ok(Report {
        server: String::new(),
        embedded: false,
        module: String::new(),
        plan: plan.clone(),
        elapsed,
        tally,
        samples,
    })
}

/// Tasks in a terminal state.
fn terminal_count(stats: &fabric_types::wire::FabricStats) -> u64 {
    stats.succeeded + stats.failed + stats.cancelled + stats.expired
}

/// Reads this run's tasks back, newest first, 1000 a page: those of the warm-up task's
/// module created since it (the warm-up task itself left out).
async fn read_back(client: &Client, tally: &mut Tally, warm: &Task) -> Result<(), ClientError> {
    let mut cursor = None;
    loop {
        let page = client
            .task_list(fabric_types::wire::TaskList {
                state: None,
                limit: Some(RECONCILE_BATCH),
                cursor,
            })
            .await?;
        let mut older = false;
        for task in &page.tasks {
            if task.created_at < warm.created_at {
                older = true;
            } else if task.id != warm.id && task.module == warm.module {
                tally.listed(task);
            }
        }
        match page.next_cursor {
            Some(next) if !older => cursor = Some(next),
            _ => break,
        }
    }
    tally.lost = tally.submitted.saturating_sub(tally.finished);
    Ok(())
}

fn progress(amount: Amount) -> ProgressBar {
    let (bar, template) = match amount {
        Amount::Tasks(total) => (
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            "{spinner} finished [{bar:30}] {pos}/{len} {per_sec} ({msg})",
        ),
        Amount::Duration(_) => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {elapsed} finished {pos} {per_sec} ({msg})",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar
}

/// Reads back, with `task.get`, pending tasks acknowledged more than [`STALL`] ago: their
/// events may have been skipped. Returns how many it found finished (or gone).
async fn reconcile(client: &Client, tally: &mut Tally, now: Instant) -> Result<usize, ClientError> {
    let ids: Vec<String> = tally
        .pending
        .iter()
        .filter(|(_, p)| now.duration_since(p.acked) >= STALL)
        .take(RECONCILE_BATCH)
        .map(|(id, _)| id.to_string())
        .collect();
    tally.last_progress = now;
    if ids.is_empty() {
        return Ok(0);
    }
    let calls: Vec<(&str, Value)> = ids
        .iter()
        .map(|id| ("task.get", json!({ "id": id })))
        .collect();
    let answers = client.batch(calls).await?;
    let mut done = 0;
    for (id, answer) in ids.iter().zip(answers) {
        match answer {
            Ok(value) => {
                let task: Task =
                    serde_json::from_value(value).map_err(|e| ClientError::Decode {
                        what: "task.get".into(),
                        reason: e.to_string(),
                    })?;
                if task.state.is_terminal() {
                    done += tally.read_back(&task);
                }
            }
            // Pruned before it could be read back (a short --retention).
            Err(error) if error.code() == Some(fabric_types::wire::code::NOT_FOUND) => {
                done += tally.lost(id);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// Maps this process's monotonic clock onto wall-clock milliseconds (the fallback for a
/// task's `created_at` when its id does not carry it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    unix_ms: i64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms(OffsetDateTime::now_utc()),
        }
    }

    fn unix_ms_at(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.instant).as_millis();
        self.unix_ms + i64::try_from(since).unwrap_or(i64::MAX / 2)
    }
}

/// A task submitted and acknowledged, not yet finished.
#[derive(Debug)]
struct Pending {
    sent: Instant,
    acked: Instant,
    first_start_ms: Option<i64>,
    attempts_seen: u32,
}

/// Events of a task whose acknowledgement has not come back yet (a task can finish before
/// the answer to the call that submitted it is read).
#[derive(Debug, Default)]
struct Early {
    received: Option<Instant>,
    first_start_ms: Option<i64>,
    outcomes: Vec<Outcome>,
    terminal: Option<(TaskState, Option<i64>, Instant)>,
}

/// Everything counted so far; its size is bounded by the tasks in flight.
#[derive(Debug)]
struct Tally {
    created_from_id: bool,
    clock: Clock,
    pending: HashMap<Box<str>, Pending>,
    early: HashMap<Box<str>, Early>,
    submitted: u64,
    finished: u64,
    /// Finished tasks read back with `task.get` because their event was skipped.
    read_back: u64,
    /// Pending tasks that were gone (pruned) when read back.
    lost: u64,
    states: [u64; TaskState::ALL.len()],
    outcomes: [u64; Outcome::ALL.len()],
    /// `created_at` to the first attempt's `started_at`, in whole milliseconds (the
    /// precision of the server's timestamps).
    to_start: LogHistogram,
    /// `created_at` to the last attempt's `finished_at`, in whole milliseconds.
    to_finish: LogHistogram,
    /// From sending the submit call to receiving the task's terminal event, in µs.
    client_to_event: LogHistogram,
    /// How long each submit call took, in µs.
    submit_call: LogHistogram,
    first_created_ms: Option<i64>,
    last_finished_ms: Option<i64>,
    last_progress: Instant,
}

impl Tally {
    fn new(created_from_id: bool, clock: Clock) -> Self {
        Self {
            created_from_id,
            clock,
            pending: HashMap::new(),
            early: HashMap::new(),
            submitted: 0,
            finished: 0,
            read_back: 0,
            lost: 0,
            states: [0; TaskState::ALL.len()],
            outcomes: [0; Outcome::ALL.len()],
            to_start: LogHistogram::millis(),
            to_finish: LogHistogram::millis(),
            client_to_event: LogHistogram::default(),
            submit_call: LogHistogram::default(),
            first_created_ms: None,
            last_finished_ms: None,
            last_progress: clock.instant,
        }
    }

    fn count_outcome(&mut self, outcome: Outcome) {
        if let Some(index) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes[index] += 1;
        }
    }

    /// One submit call's tasks, counted only.
    fn count_submitted(&mut self, count: usize, took: Duration, now: Instant) {
        self.submit_call.record(micros(took));
        self.submitted += count as u64;
        self.last_progress = now;
    }

    /// One submit call's tasks; returns how many of them had already finished.
    fn acked(&mut self, ids: Vec<String>, sent: Instant, took: Duration, now: Instant) -> usize {
        self.count_submitted(ids.len(), took, now);
        let mut done = 0;
        for id in ids {
            let id = id.into_boxed_str();
            let mut pending = Pending {
                sent,
                acked: now,
                first_start_ms: None,
                attempts_seen: 0,
            };
            if let Some(early) = self.early.remove(&id) {
                pending.first_start_ms = early.first_start_ms;
                pending.attempts_seen = early.outcomes.len() as u32;
                for outcome in early.outcomes {
                    self.count_outcome(outcome);
                }
                if let Some((state, finished_ms, received)) = early.terminal {
                    self.finish(&id, &pending, state, finished_ms, Some(received), None);
                    done += 1;
                    continue;
                }
            }
            self.pending.insert(id, pending);
        }
        done
    }

    /// One `task.event`; returns 1 when it finished a task of this run.
    fn event(&mut self, notice: TaskEventNotice, received: Instant) -> usize {
        let terminal = notice.state.is_terminal();
        if notice.attempt.is_none() && !terminal {
            return 0;
        }
        let started_ms = notice
            .attempt
            .as_ref()
            .and_then(|a| a.started_at)
            .map(unix_ms);
        let finished_ms = notice
            .attempt
            .as_ref()
            .and_then(|a| a.finished_at)
            .map(unix_ms);
        let outcome = notice.attempt.as_ref().map(|a| a.outcome);
        if let Some(mut pending) = self.pending.remove(notice.id.as_str()) {
            if let Some(outcome) = outcome {
                self.count_outcome(outcome);
                pending.attempts_seen += 1;
            }
            pending.first_start_ms = pending.first_start_ms.or(started_ms);
            if terminal {
                self.finish(
                    &notice.id,
                    &pending,
                    notice.state,
                    finished_ms,
                    Some(received),
                    None,
                );
                self.last_progress = received;
                return 1;
            }
            self.pending.insert(notice.id.into_boxed_str(), pending);
            return 0;
        }
        let early = self.early.entry(notice.id.into_boxed_str()).or_default();
        early.received.get_or_insert(received);
        early.first_start_ms = early.first_start_ms.or(started_ms);
        early.outcomes.extend(outcome);
        if terminal {
            early.terminal = Some((notice.state, finished_ms, received));
        }
        0
    }

    /// A pending task read back finished; returns 1 when it was pending.
    fn read_back(&mut self, task: &Task) -> usize {
        let Some(pending) = self.pending.remove(task.id.as_str()) else {
            return 0;
        };
        let seen = pending.attempts_seen as usize;
        for attempt in task.attempts.iter().skip(seen) {
            self.count_outcome(attempt.outcome);
        }
        let pending = Pending {
            first_start_ms: task.started_at.map(unix_ms).or(pending.first_start_ms),
            ..pending
        };
        self.read_back += 1;
        self.finish(
            &task.id,
            &pending,
            task.state,
            task.finished_at.map(unix_ms),
            None,
            Some(unix_ms(task.created_at)),
        );
        1
    }

    /// A task of this run read back after it (`--read-back`): counted when finished.
    fn listed(&mut self, task: &Task) {
        if !task.state.is_terminal() {
            return;
        }
        for attempt in &task.attempts {
            self.count_outcome(attempt.outcome);
        }
        let pending = Pending {
            sent: self.clock.instant,
            acked: self.clock.instant,
            first_start_ms: task.started_at.map(unix_ms),
            attempts_seen: 0,
        };
        self.read_back += 1;
        self.finish(
            &task.id,
            &pending,
            task.state,
            task.finished_at.map(unix_ms),
            None,
            Some(unix_ms(task.created_at)),
        );
    }

    /// A pending task that is gone; returns 1 when it was pending.
    fn lost(&mut self, id: &str) -> usize {
        match self.pending.remove(id) {
            Some(_) => {
                self.lost += 1;
                1
            }
            None => 0,
        }
    }

    fn finish(
        &mut self,
        id: &str,
        pending: &Pending,
        state: TaskState,
        finished_ms: Option<i64>,
        received: Option<Instant>,
        created_ms: Option<i64>,
    ) {
        self.finished += 1;
        if let Some(index) = TaskState::ALL.iter().position(|s| *s == state) {
            self.states[index] += 1;
        }
        let created_ms = created_ms
            .or_else(|| self.created_from_id.then(|| id_unix_ms(id)).flatten())
            .unwrap_or_else(|| self.clock.unix_ms_at(pending.sent));
        if let Some(start) = pending.first_start_ms {
            self.to_start.record(non_negative(start - created_ms));
        }
        if let Some(finish) = finished_ms {
            self.to_finish.record(non_negative(finish - created_ms));
            self.last_finished_ms = Some(self.last_finished_ms.map_or(finish, |l| l.max(finish)));
        }
        if let Some(received) = received {
            self.client_to_event
                .record(micros(received.saturating_duration_since(pending.sent)));
        }
        self.first_created_ms = Some(
            self.first_created_ms
                .map_or(created_ms, |f| f.min(created_ms)),
        );
    }

    /// Drops events of tasks no acknowledgement named within [`EARLY_EVENT_TTL`].
    fn forget_early_events(&mut self, now: Instant) {
        self.early.retain(|_, early| {
            early
                .received
                .is_none_or(|at| now.duration_since(at) < EARLY_EVENT_TTL)
        });
    }

    /// Finished tasks per second, from the first task's `created_at` to the last
    /// `finished_at`.
    fn throughput(&self) -> Option<f64> {
        let (first, last) = (self.first_created_ms?, self.last_finished_ms?);
        let seconds = (last - first) as f64 / 1000.0;
        (seconds > 0.0).then(|| self.finished as f64 / seconds)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn non_negative(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// Sub-buckets per power of two: 2^7 = 128, so a bucket is at most 1/128 (0.8%) of its
/// values wide, and its midpoint is within 0.4% of any of them.
const SUB_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Values up to 2^40 µs (12.7 days) are kept apart; larger ones count in the last bucket.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = (MAX_EXPONENT - SUB_BITS + 2) as usize * SUB_BUCKETS;

/// A log-linear histogram of durations in whole units (microseconds, or milliseconds for
/// the server's millisecond timestamps): exact below 128 units, then 128 buckets per power
/// of two, in a fixed 35 KiB whatever the number of values.
#[derive(Clone)]
struct LogHistogram {
    /// Microseconds in one unit.
    unit_us: u64,
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("unit_us", &self.unit_us)
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            unit_us: 1,
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl LogHistogram {
    /// A histogram of whole milliseconds.
    fn millis() -> Self {
        Self {
            unit_us: 1000,
            ..Self::default()
        }
    }

    /// A value in units as milliseconds.
    fn ms(&self, value: u64) -> f64 {
        (value * self.unit_us) as f64 / 1000.0
    }

    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS as u64 {
            return value as usize;
        }
        let exponent = (63 - value.leading_zeros()).min(MAX_EXPONENT);
        let shift = exponent - SUB_BITS;
        let mantissa = ((value >> shift) as usize).min(2 * SUB_BUCKETS - 1);
        (shift as usize + 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
    }

    /// The smallest value of bucket `index` and the bucket's width.
    fn bucket(index: usize) -> (u64, u64) {
        if index < SUB_BUCKETS {
            return (index as u64, 1);
        }
        let shift = (index / SUB_BUCKETS - 1) as u32;
        let mantissa = (index % SUB_BUCKETS + SUB_BUCKETS) as u64;
        (mantissa << shift, 1 << shift)
    }

    fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The value at quantile `q` (0..=1): the midpoint of its bucket, kept within the
    /// smallest and largest values seen; `None` when empty.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = Self::bucket(index);
                return Some((low + width / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// `{count, p50, p90, p99, max}` in milliseconds.
    fn to_json(&self) -> Value {
        let ms = |value: Option<u64>| value.map(|v| self.ms(v));
        json!({
            "count": self.count,
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms((self.count > 0).then_some(self.max)),
        })
    }

    /// `p50 p90 p99 max` cells in milliseconds.
    fn cells(&self) -> Vec<String> {
        let cell = |value: Option<u64>| {
            value.map_or_else(|| "-".to_owned(), |v| format!("{:.3}", self.ms(v)))
        };
        vec![
            cell(self.quantile(0.50)),
            cell(self.quantile(0.90)),
            cell(self.quantile(0.99)),
            cell((self.count > 0).then_some(self.max)),
        ]
    }
}

/// One reading of `/metrics` (and of the database file's size).
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_seconds: f64,
    rss_bytes: Option<u64>,
    db_bytes: Option<u64>,
}

/// The server's memory (and database size) over the run, bounded in size.
#[derive(Debug, Default)]
struct Samples {
    series: Vec<Sample>,
    /// Only every `stride`-th reading joins the series.
    stride: u64,
    readings: u64,
    rss: Extremes,
    db: Extremes,
}

#[derive(Debug, Default, Clone, Copy)]
struct Extremes {
    count: u64,
    min: Option<u64>,
    max: Option<u64>,
    last: Option<u64>,
}

impl Extremes {
    fn add(&mut self, value: Option<u64>) {
        let Some(value) = value else { return };
        self.count += 1;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        self.last = Some(value);
    }
}

impl Samples {
    fn push(&mut self, sample: Sample) {
        self.rss.add(sample.rss_bytes);
        self.db.add(sample.db_bytes);
        let stride = self.stride.max(1);
        if self.readings.is_multiple_of(stride) {
            self.series.push(sample);
            if self.series.len() >= MAX_SERIES {
                let mut index = 0;
                self.series.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.readings += 1;
    }

    fn series_json(&self, value: impl Fn(&Sample) -> Option<u64>) -> Value {
        let points: Vec<Value> = self
            .series
            .iter()
            .filter_map(|s| value(s).map(|v| json!([(s.at_seconds * 1000.0).round() / 1000.0, v])))
            .collect();
        Value::Array(points)
    }
}

/// Reads the server's `/metrics` and the database file's size every second.
struct Sampler {
    http: reqwest::Client,
    metrics_url: String,
    db_file: Option<PathBuf>,
}

impl Sampler {
    fn new(base: &str, db_file: Option<PathBuf>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            metrics_url: format!("{base}/metrics"),
            db_file,
        }
    }

    /// Samples until `stop`, then once more, and returns what it saw.
    async fn run(self, mut stop: oneshot::Receiver<()>) -> Samples {
        let started = Instant::now();
        let mut samples = Samples::default();
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = every.tick() => {
                    let sample = self.sample(started).await;
                    samples.push(sample);
                }
            }
        }
        samples.push(self.sample(started).await);
        samples
    }

    async fn sample(&self, started: Instant) -> Sample {
        let at_seconds = started.elapsed().as_secs_f64();
        let rss_bytes = match self.http.get(&self.metrics_url).send().await {
            Ok(response) => response.text().await.ok().as_deref().and_then(rss_of),
            Err(_) => None,
        };
        Sample {
            at_seconds,
            rss_bytes,
            db_bytes: self.db_file.as_deref().and_then(db_size),
        }
    }
}

/// `fabric_process_resident_memory_bytes` in a Prometheus text exposition.
fn rss_of(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line
            .strip_prefix("fabric_process_resident_memory_bytes")?
            .strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// The bytes of a SQLite database: the file plus its write-ahead log.
fn db_size(path: &std::path::Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len());
    Some(main + wal)
}

/// Everything `fabric load` prints.
#[derive(Debug)]
struct Report {
    server: String,
    embedded: bool,
    module: String,
    plan: Plan,
    elapsed: Duration,
    tally: Tally,
    samples: Samples,
}

impl Report {
    fn states(&self) -> serde_json::Map<String, Value> {
        TaskState::ALL
            .iter()
            .zip(self.tally.states)
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| (state.to_string(), json!(n)))
            .collect()
    }

    /// Where each task's `created_at` came from: the task read back, its id, or the
    /// client's clock when the submit call was sent.
    fn created_at_from(&self) -> &'static str {
        if self.plan.read_back {
            "task"
        } else if self.tally.created_from_id {
            "task_id"
        } else {
            "client_clock"
        }
    }

    fn outcomes(&self) -> serde_json::Map<String, Value> {
        Outcome::ALL
            .iter()
            .zip(self.tally.outcomes)
            .filter(|(_, n)| *n > 0)
            .map(|(outcome, n)| (outcome.to_string(), json!(n)))
            .collect()
    }

    fn to_json(&self) -> Value {
        let t = &self.tally;
        let s = &self.samples;
        let (tasks, duration) = match self.plan.amount {
            Amount::Tasks(n) => (Some(n), None),
            Amount::Duration(d) => (None, Some(d.as_secs_f64())),
        };
        let mut report = json!({
            "server": self.server,
            "embedded": self.embedded,
            "module": self.module,
            "tasks": tasks,
            "duration_seconds": duration,
            "batch": self.plan.batch,
            "concurrency": self.plan.concurrency,
            "max_pending": self.plan.window,
            "submitted": t.submitted,
            "finished": t.finished,
            "read_back": t.read_back,
            "lost": t.lost,
            "states": self.states(),
            "outcomes": self.outcomes(),
            "elapsed_seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "throughput_per_second": t.throughput().map(|x| x.round()),
            "collected_by": if self.plan.read_back { "task.list" } else { "task.subscribe" },
            "created_at_from": self.created_at_from(),
            "latency_ms": {
                "submit_to_start": t.to_start.to_json(),
                "submit_to_finish": t.to_finish.to_json(),
                "client_submit_to_event": t.client_to_event.to_json(),
                "submit_call": t.submit_call.to_json(),
            },
            "rss_bytes": {
                "samples": s.rss.count,
                "min": s.rss.min,
                "max": s.rss.max,
                "last": s.rss.last,
                "series": s.series_json(|x| x.rss_bytes),
            },
        });
        if s.db.count > 0 {
            report["db_bytes"] = json!({
                "samples": s.db.count,
                "min": s.db.min,
                "max": s.db.max,
                "last": s.db.last,
                "series": s.series_json(|x| x.db_bytes),
            });
        }
        report
    }

    fn table(&self) -> String {
        let t = &self.tally;
        let s = &self.samples;
        let plan = &self.plan;
        let amount = match plan.amount {
            Amount::Tasks(n) => format!("{n} tasks"),
            Amount::Duration(d) => format!("{} s of tasks", d.as_secs_f64()),
        };
        let mut text = format!(
            "fabric load: {amount} of {} in batches of {}, {} submitters, at most {} pending, {}{}\n\n",
            self.module,
            plan.batch,
            plan.concurrency,
            plan.window,
            if self.embedded {
                "embedded server at "
            } else {
                "server "
            },
            self.server,
        );
        let join = |map: serde_json::Map<String, Value>| {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(", ")
            }
        };
        let mut rows = vec![
            vec!["submitted".to_owned(), t.submitted.to_string()],
            vec![
                "finished".to_owned(),
                format!("{} ({})", t.finished, join(self.states())),
            ],
            vec!["attempts".to_owned(), join(self.outcomes())],
            vec![
                "elapsed".to_owned(),
                format!("{:.2} s", self.elapsed.as_secs_f64()),
            ],
            vec![
                "throughput".to_owned(),
                t.throughput()
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.0} tasks/s")),
            ],
        ];
        if self.plan.read_back {
            rows.push(vec![
                "read back".to_owned(),
                format!("{} with task.list, {} not found", t.read_back, t.lost),
            ]);
        } else if t.read_back + t.lost > 0 {
            rows.push(vec![
                "read back".to_owned(),
                format!(
                    "{} with task.get (their events were skipped), {} pruned before",
                    t.read_back, t.lost
                ),
            ]);
        }
        if let (Some(min), Some(max)) = (s.rss.min, s.rss.max) {
            rows.push(vec![
                "server RSS".to_owned(),
                format!(
                    "min {}, max {}, last {} ({} samples)",
                    format::bytes(min),
                    format::bytes(max),
                    format::bytes(s.rss.last.unwrap_or(max)),
                    s.rss.count
                ),
            ]);
        }
        if let (Some(min), Some(max)) = (s.db.min, s.db.max) {
            rows.push(vec![
                "database".to_owned(),
                format!(
                    "min {}, max {}, last {}",
                    format::bytes(min),
                    format::bytes(max),
                    format::bytes(s.db.last.unwrap_or(max))
                ),
            ]);
        }
        for row in rows {
            text.push_str(&format!("{:<12}{}\n", row[0], row[1]));
        }
        text.push('\n');
        let created = if self.created_at_from() != "client_clock" {
            "created_at"
        } else {
            "sent (client clock)"
        };
        let latency_rows: Vec<Vec<String>> = [
            (format!("{created} -> started_at"), &t.to_start),
            (format!("{created} -> finished_at"), &t.to_finish),
            (
                "client: submit sent -> event".to_owned(),
                &t.client_to_event,
            ),
            ("client: submit call".to_owned(), &t.submit_call),
        ]
        .into_iter()
        .filter(|(_, histogram)| histogram.count > 0)
        .map(|(name, histogram)| {
            let mut row = vec![name];
            row.extend(histogram.cells());
            row
        })
        .collect();
        text.push_str(&format::table(
            &["LATENCY (ms)", "P50", "P90", "P99", "MAX"],
            &latency_rows,
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::Attempt;

    #[test]
    fn the_histogram_is_exact_for_small_values_and_within_one_percent_above() {
        let mut small = LogHistogram::default();
        for v in 0..100 {
            small.record(v);
        }
        assert_eq!(small.quantile(0.5), Some(49));
        assert_eq!(small.quantile(1.0), Some(99));
        assert_eq!(small.quantile(0.0), Some(0));

        let mut values: Vec<u64> = (0..20_000u64)
            .map(|i| (i * 7919 % 20_000) * 137 + 500)
            .collect();
        let mut histogram = LogHistogram::default();
        for v in &values {
            histogram.record(*v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let exact = values[(q * values.len() as f64).ceil() as usize - 1] as f64;
            let got = histogram.quantile(q).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact < 0.01,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(histogram.quantile(1.0), Some(*values.last().unwrap()));
        assert_eq!(histogram.count, 20_000);
    }

    #[test]
    fn histogram_buckets_tile_the_range() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = LogHistogram::bucket(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(LogHistogram::index(low), index);
            assert_eq!(LogHistogram::index(low + width - 1), index);
            expected_low = low + width;
        }
        assert_eq!(LogHistogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn fabric_ids_carry_their_milliseconds() {
        // 2023-11-14T22:13:20.123Z = 1_700_000_000_123 ms, then 80 bits of anything.
        let ms: u128 = 1_700_000_000_123;
        let value = (ms << 80) | 0x1234_5678_9abc_def0_1234;
        let id: String = (0..26)
            .rev()
            .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 31) as usize]))
            .collect();
        assert_eq!(id_unix_ms(&id), Some(1_700_000_000_123));
        assert_eq!(id_unix_ms(&id.to_lowercase()), Some(1_700_000_000_123));
        assert_eq!(id_unix_ms("42"), None);
        assert_eq!(id_unix_ms("ZZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(id_unix_ms("0000000000000000000000000U"), None);
    }

    fn notice(id: &str, state: TaskState, outcome: Option<Outcome>, at_ms: i64) -> TaskEventNotice {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000).unwrap();
        TaskEventNotice {
            id: id.to_owned(),
            state,
            attempt: outcome.map(|outcome| {
                let mut attempt = Attempt::new(outcome);
                attempt.started_at = Some(at - time::Duration::milliseconds(2));
                attempt.finished_at = Some(at);
                attempt
            }),
        }
    }

    #[test]
    fn events_before_and_after_the_acknowledgement_count_once() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock);
        let t0 = clock.instant;
        let sent_ms = clock.unix_ms;
        // "a" finishes before its acknowledgement arrives; "b" after; "c" is retried once.
        assert_eq!(
            tally.event(
                notice("a", TaskState::Succeeded, Some(Outcome::Ok), sent_ms + 5),
                t0
            ),
            0
        );
        assert_eq!(
            tally.event(notice("a", TaskState::Running, None, sent_ms), t0),
            0
        );
        let done = tally.acked(
            vec!["a".into(), "b".into(), "c".into()],
            t0,
            Duration::from_millis(3),
            t0,
        );
        assert_eq!(done, 1);
        assert_eq!(tally.pending.len(), 2);
        assert_eq!(
            tally.event(
                notice("c", TaskState::Queued, Some(Outcome::Trap), sent_ms + 4),
                t0
            ),
            0
        );
        assert_eq!(
            tally.event(
                notice("b", TaskState::Succeeded, Some(Outcome::Ok), sent_ms + 9),
                t0
            ),
            1
        );
        assert_eq!(
            tally.event(
                notice("c", TaskState::Failed, Some(Outcome::Exit), sent_ms + 20),
                t0
            ),
            1
        );
        assert!(tally.pending.is_empty() && tally.early.is_empty());
        assert_eq!((tally.submitted, tally.finished), (3, 3));
        let report_outcomes: Vec<(Outcome, u64)> = Outcome::ALL
            .iter()
            .copied()
            .zip(tally.outcomes)
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            report_outcomes,
            [(Outcome::Ok, 2), (Outcome::Exit, 1), (Outcome::Trap, 1)]
        );
        assert_eq!(tally.to_finish.count, 3);
        assert_eq!(tally.to_finish.max, 20);
        // "c" started with its first attempt, 2 ms before that attempt ended (not with its
        // last, at 18 ms); "a" at 3 ms, "b" at 7 ms.
        assert_eq!((tally.to_start.min, tally.to_start.max), (2, 7));
    }

    #[test]
    fn a_read_back_task_counts_only_the_attempts_not_seen() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock);
        let t0 = clock.instant;
        tally.acked(vec!["x".into()], t0, Duration::ZERO, t0);
        tally.event(
            notice("x", TaskState::Queued, Some(Outcome::Trap), clock.unix_ms),
            t0,
        );
        let at = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(clock.unix_ms + ms) * 1_000_000)
                .unwrap()
        };
        let task = Task {
            id: "x".into(),
            module: "echo".into(),
            state: TaskState::Succeeded,
            priority: Priority::Normal,
            created_at: at(0),
            started_at: Some(at(1)),
            finished_at: Some(at(7)),
            attempts: vec![Attempt::new(Outcome::Trap), Attempt::new(Outcome::Ok)],
            output: None,
            output_base64: None,
            error: None,
            labels: Default::default(),
            dirs: Default::default(),
        };
        assert_eq!(tally.read_back(&task), 1);
        assert_eq!(tally.read_back(&task), 0);
        assert_eq!(
            tally.outcomes[Outcome::ALL
                .iter()
                .position(|o| *o == Outcome::Trap)
                .unwrap()],
            1
        );
        assert_eq!(tally.outcomes[0], 1);
        assert_eq!(tally.to_finish.max, 7);
        assert_eq!(tally.read_back, 1);
    }

    #[test]
    fn events_of_other_clients_are_forgotten() {
        let clock = Clock::now();
        let mut tally = Tally::new(false, clock);
        tally.event(
            notice("other", TaskState::Succeeded, Some(Outcome::Ok), 0),
            clock.instant,
        );
        tally.forget_early_events(clock.instant + Duration::from_secs(1));
        assert_eq!(tally.early.len(), 1);
        tally.forget_early_events(clock.instant + EARLY_EVENT_TTL);
        assert!(tally.early.is_empty());
    }

    #[test]
    fn the_series_stays_bounded_and_evenly_spaced() {
        let mut samples = Samples::default();
        for i in 0..(MAX_SERIES as u64 * 5) {
            samples.push(Sample {
                at_seconds: i as f64,
                rss_bytes: Some(1000 + i),
                db_bytes: None,
            });
        }
        assert!(samples.series.len() < MAX_SERIES);
        assert_eq!(samples.rss.count, MAX_SERIES as u64 * 5);
        assert_eq!(samples.rss.min, Some(1000));
        let gaps: Vec<f64> = samples
            .series
            .windows(2)
            .map(|w| w[1].at_seconds - w[0].at_seconds)
            .collect();
        assert!(gaps.iter().all(|g| *g == gaps[0]), "{gaps:?}");
    }

    #[test]
    fn rss_is_read_from_the_exposition() {
        let text = "# HELP fabric_process_resident_memory_bytes x\nfabric_process_resident_memory_bytes 123456\nfabric_process_resident_memory_bytes_other 1\n";
        assert_eq!(rss_of(text), Some(123_456));
        assert_eq!(rss_of("fabric_workers 4\n"), None);
    }

    #[test]
    fn a_duration_quota_ends_and_a_task_quota_runs_out() {
        let tasks = Quota {
            left: AtomicU64::new(250),
            until: None,
        };
        assert_eq!(
            [
                tasks.claim(100),
                tasks.claim(100),
                tasks.claim(100),
                tasks.claim(100)
            ],
            [100, 100, 50, 0]
        );
        tasks.unclaim(30);
        assert_eq!(tasks.claim(100), 30);
        let over = Quota {
            left: AtomicU64::new(0),
            until: Some(Instant::now()),
        };
        assert_eq!(over.claim(100), 0);
        assert!(over.is_over());
    }
}
