//! Runs a load: submitters claim tasks from a quota and submit them within a window of
//! pending tasks, while one loop follows their events (or the server's counts) to the end,
//! and with `--mix` cancels the tasks of the cancel kind.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fabric_client::{Client, ClientError};
use fabric_types::wire::{Task, TaskSpec};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Failure;
use super::args::LoadArgs;
use super::embedded::Embedded;
use super::mix::{self, Kind};
use super::report::Report;
use super::sampler::{SampleLog, Sampler};
use super::tally::{Clock, Tally, id_carries_created_at};

/// Tasks submitted when neither --tasks nor --duration is given.
const DEFAULT_TASKS: u64 = 10_000;
/// With tasks pending, this long without an acknowledgement or a finished task is a stall:
/// pending tasks are then read back with `task.get`, in case their events were skipped.
const STALL: Duration = Duration::from_secs(1);
/// Most tasks read back in one JSON-RPC batch of `task.get` calls.
const RECONCILE_BATCH: usize = 1000;
/// How long the warm-up task may take.
const WARM_UP_WAIT: Duration = Duration::from_secs(60);
/// How often the progress bar and the stall check run.
const TICK: Duration = Duration::from_millis(200);
/// How long after its acknowledgement a task of the mix's cancel kind is cancelled.
const CANCEL_AFTER: Duration = Duration::from_millis(250);
/// A pending task acknowledged this long ago is read back with `task.get` (checked every
/// [`OVERDUE_EVERY`]) even while others finish: its events may have been skipped, and
/// retention could prune it before the run ends.
const OVERDUE: Duration = Duration::from_secs(60);
const OVERDUE_EVERY: Duration = Duration::from_secs(5);
/// With tasks pending, this long without one finishing ends the run: the pending tasks
/// count as unfinished (the longest task of the mix lasts 20 s; a plain run's tasks at
/// most their 30 s timeout, three times, with backoff).
const GIVE_UP: Duration = Duration::from_secs(120);

/// What to submit and how.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) spec: TaskSpec,
    pub(super) batch: u64,
    pub(super) concurrency: u32,
    pub(super) window: u64,
    pub(super) amount: Amount,
    pub(super) read_back: bool,
    /// `--mix`: each task is the next kind of [`Kind::ROTATION`] instead of `spec`.
    pub(super) mix: bool,
}

impl Plan {
    /// The specs of `count` tasks, the first the `first`-th submitted.
    fn specs(&self, first: u64, count: u64) -> Vec<TaskSpec> {
        if !self.mix {
            return vec![self.spec.clone(); count as usize];
        }
        let now = OffsetDateTime::now_utc();
        (first..first + count)
            .map(|index| Kind::at(index).spec(now, self.spec.priority))
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Amount {
    Tasks(u64),
    Duration(Duration),
}

pub(super) async fn load(args: LoadArgs) -> Result<Report, Failure> {
    let amount = match (args.tasks, args.duration) {
        (_, Some(duration)) => Amount::Duration(duration),
        (Some(tasks), None) => Amount::Tasks(tasks),
        (None, None) => Amount::Tasks(DEFAULT_TASKS),
    };
    let spec = if args.mix {
        Kind::Success.spec(OffsetDateTime::now_utc(), args.priority)
    } else {
        TaskSpec {
            module: args.module.clone(),
            input: Some(args.input.clone()),
            priority: args.priority,
            ..TaskSpec::default()
        }
    };
    let plan = Plan {
        spec,
        batch: u64::from(args.batch),
        concurrency: args.concurrency,
        window: args.max_pending.max(u64::from(args.batch)),
        amount,
        read_back: args.read_back,
        mix: args.mix,
    };
    if args.sample_every.is_zero() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--sample-every must be longer than 0"
        )));
    }
    let log = match args.samples {
        Some(path) => Some(
            SampleLog::create(path.clone(), args.sample_every).map_err(|e| {
                Failure::Usage(anyhow::anyhow!(
                    "cannot create the samples file {}: {e}",
                    path.display()
                ))
            })?,
        ),
        None => None,
    };
    let (embedded, url, db_file) = if args.embedded {
        let (embedded, url, db) = Embedded::start(*args.serve).await?;
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
        let warm = warm_up(&client, &plan).await.map_err(server_error)?;
        drive(client.clone(), &plan, &warm, db_file, log).await
    }
    .await;
    let report = match outcome {
        Ok(mut report) => {
            report.server = url.clone();
            report.embedded = args.embedded;
            report.module = if args.mix {
                "a mix".to_owned()
            } else {
                args.module
            };
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

/// Runs one task of the plan to its end (with `--mix`, one of each module), so the module
/// is compiled and cached before the measurement; they are not counted. Returns the first.
async fn warm_up(client: &Client, plan: &Plan) -> Result<Task, ClientError> {
    let submitted = client.task_submit(&plan.spec).await?;
    let warm = client.task_wait(&submitted.id, Some(WARM_UP_WAIT)).await?;
    if plan.mix {
        for spec in mix::warm_up_specs() {
            let submitted = client.task_submit(&spec).await?;
            client.task_wait(&submitted.id, Some(WARM_UP_WAIT)).await?;
        }
    }
    Ok(warm)
}

/// What a submitter tells the collector.
enum Submission {
    /// The ids of the tasks one call stored, in order, and when the call was sent; with
    /// `--mix`, the first task's place in the rotation.
    Acked {
        ids: Vec<String>,
        first: Option<u64>,
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
    /// Tasks handed out to be sent so far: the next one's place in the mix's rotation.
    sent: AtomicU64,
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
    plan: Plan,
    quota: Arc<Quota>,
    window: Arc<Semaphore>,
    tx: mpsc::Sender<Submission>,
) {
    let batch = plan.batch;
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
        let first = quota.sent.fetch_add(count, Ordering::Relaxed);
        let mut specs = plan.specs(first, count);
        let sent = Instant::now();
        let result = if batch == 1 {
            let spec = specs.pop().expect("one spec");
            client.task_submit(&spec).await.map(|s| vec![s.id])
        } else {
            client
                .task_submit_batch(specs)
                .await
                .map(|submitted| submitted.into_iter().map(|s| s.id).collect())
        };
        let message = match result {
            Ok(ids) => Submission::Acked {
                ids,
                first: plan.mix.then_some(first),
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
    log: Option<SampleLog>,
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

    // Tasks finished so far, for the samples file.
    let finished = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::new(&url, db_file, log, finished.clone());
    let (stop_sampling, sampling_stopped) = oneshot::channel::<()>();
    let sampling = tokio::spawn(sampler.run(sampling_stopped));

    let started = Instant::now();
    let created_from_id = !plan.read_back && id_carries_created_at(warm);
    let mut tally = Tally::new(created_from_id, Clock::now(), plan.mix);
    let quota = Arc::new(Quota {
        left: AtomicU64::new(match plan.amount {
            Amount::Tasks(n) => n,
            Amount::Duration(_) => 0,
        }),
        until: match plan.amount {
            Amount::Tasks(_) => None,
            Amount::Duration(d) => Some(started + d),
        },
        sent: AtomicU64::new(0),
    });
    let window = Arc::new(Semaphore::new(
        usize::try_from(plan.window).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let (tx, mut submissions) = mpsc::channel::<Submission>(plan.concurrency as usize * 2);
    let submitters: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            tokio::spawn(submitter(
                client.clone(),
                plan.clone(),
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
    let mut overdue_checked = started;
    // The count of finished tasks, and since when it has not changed.
    let mut last_finish = (0, started);
    let result: Result<(), Failure> = loop {
        finished.store(
            if plan.read_back {
                finished_on_server
            } else {
                tally.finished
            },
            Ordering::Relaxed,
        );
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
                Some(Submission::Acked { ids, first, sent, took }) => {
                    let done = tally.acked(ids, first, sent, took, Instant::now());
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
                if let Err(error) = cancel_due(&client, &mut tally, now).await {
                    break Err(server_error(error));
                }
                let mut min_age = None;
                if now.duration_since(tally.last_progress) >= STALL {
                    min_age = Some(STALL);
                } else if now.duration_since(overdue_checked) >= OVERDUE_EVERY {
                    overdue_checked = now;
                    min_age = Some(OVERDUE);
                }
                let read = async {
                    let mut done = recheck(&client, &mut tally).await?;
                    if let Some(min_age) = min_age {
                        done += reconcile(&client, &mut tally, now, min_age).await?;
                    }
                    Ok::<_, ClientError>(done)
                };
                match read.await {
                    Ok(done) => window.add_permits(done),
                    Err(error) => break Err(server_error(error)),
                }
                tally.forget_early_events(now);
                if tally.finished != last_finish.0 || tally.pending.is_empty() {
                    last_finish = (tally.finished, now);
                } else if now.duration_since(last_finish.1) >= GIVE_UP {
                    bar.suspend(|| eprintln!(
                        "no task finished for {} s: giving up on the {} still pending",
                        GIVE_UP.as_secs(),
                        tally.pending.len()
                    ));
                    tally.give_up();
                    break Ok(());
                }
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
                ..Default::default()
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

/// Reads back, with `task.get`, pending tasks acknowledged at least `min_age` ago: their
/// events may have been skipped. Returns how many it found finished (or gone).
async fn reconcile(
    client: &Client,
    tally: &mut Tally,
    now: Instant,
    min_age: Duration,
) -> Result<usize, ClientError> {
    let ids: Vec<String> = tally
        .pending
        .iter()
        .filter(|(_, p)| now.duration_since(p.acked) >= min_age)
        .take(RECONCILE_BATCH)
        .map(|(id, _)| id.to_string())
        .collect();
    tally.last_progress = now;
    read_tasks(client, tally, ids).await
}

/// Reads back the tasks whose events ended them otherwise than their kind must (see
/// `Tally::recheck`), to count them as the store has them.
async fn recheck(client: &Client, tally: &mut Tally) -> Result<usize, ClientError> {
    let count = tally.recheck.len().min(RECONCILE_BATCH);
    let ids: Vec<String> = tally.recheck.drain(..count).map(String::from).collect();
    read_tasks(client, tally, ids).await
}

/// Reads pending tasks back with `task.get` in one batch: counts those finished, and
/// those gone as lost. Returns how many it counted.
async fn read_tasks(
    client: &Client,
    tally: &mut Tally,
    ids: Vec<String>,
) -> Result<usize, ClientError> {
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

/// Cancels, with one batch of `task.cancel` calls, the tasks of the cancel kind
/// acknowledged at least [`CANCEL_AFTER`] ago. A refused cancel is not an error here: the
/// task then ends otherwise than cancelled, and the tally counts that.
async fn cancel_due(client: &Client, tally: &mut Tally, now: Instant) -> Result<(), ClientError> {
    let mut ids = Vec::new();
    while let Some((id, acked)) = tally.to_cancel.front() {
        if now.duration_since(*acked) < CANCEL_AFTER || ids.len() >= RECONCILE_BATCH {
            break;
        }
        if tally.pending.contains_key(id) {
            ids.push(id.to_string());
        }
        tally.to_cancel.pop_front();
    }
    if ids.is_empty() {
        return Ok(());
    }
    let calls: Vec<(&str, Value)> = ids
        .iter()
        .map(|id| ("task.cancel", json!({ "id": id })))
        .collect();
    client.batch(calls).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_quota_ends_and_a_task_quota_runs_out() {
        let tasks = Quota {
            left: AtomicU64::new(250),
            until: None,
            sent: AtomicU64::new(0),
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
            sent: AtomicU64::new(0),
        };
        assert_eq!(over.claim(100), 0);
        assert!(over.is_over());
    }
}
