//! Group commit: one thread owns the write connection and applies every pending write in
//! one `BEGIN IMMEDIATE` transaction, answering each caller only after `COMMIT` returned.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fabric_store::StoreError;
use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use crate::counts::CountChanges;

/// What a write operation sees: the connection (inside the group's transaction, inside a
/// savepoint of its own), a flag to raise when it made tasks claimable, and the task count
/// changes it made (written to `task_counts` when it succeeds).
pub(crate) struct WriteCtx<'a> {
    pub conn: &'a Connection,
    pub aging_step_ms: u64,
    pub made_ready: bool,
    pub counts: CountChanges,
}

/// Sends one operation's result to its caller, given how the group's commit went.
type Reply = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>) + Send>;
/// One queued write: runs inside the transaction, says whether it succeeded (so its
/// savepoint is kept or rolled back), and returns its reply for after the commit. Given
/// an error instead of a context, it does not run and its reply carries that error.
type Job =
    Box<dyn FnOnce(Result<&mut WriteCtx<'_>, &Arc<rusqlite::Error>>) -> (bool, Reply) + Send>;

/// The handle to the writer thread. Dropping it lets the thread finish what is queued,
/// close the connection, and exit; drop waits for that.
pub(crate) struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// How much group commit grouped: operations applied and transactions committed.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    operations: AtomicU64,
    transactions: AtomicU64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(
        conn: Connection,
        max_batch: usize,
        aging_step_ms: u64,
        ready: watch::Sender<u64>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("fabric-sqlite-writer".into())
            .spawn(move || {
                run(
                    conn,
                    rx,
                    max_batch.max(1),
                    aging_step_ms,
                    ready,
                    &thread_counters,
                )
            })
            .map_err(|e| StoreError::unavailable("start the SQLite writer thread", e))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            counters,
        })
    }

    /// `(operations, transactions)` committed so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.counters.operations.load(Ordering::Relaxed),
            self.counters.transactions.load(Ordering::Relaxed),
        )
    }

    /// Queues `op` for the next group transaction and waits until that transaction
    /// committed (or failed). `what` names the operation in errors.
    pub(crate) async fn write<R, F>(&self, what: &'static str, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            let result = match ctx {
                Ok(ctx) => {
                    ctx.counts.clear();
                    op(ctx).and_then(|out| ctx.counts.apply(ctx.conn).map(|()| out))
                }
                Err(e) => Err(StoreError::unavailable(
                    format!("begin a transaction for {what}"),
                    Arc::clone(e),
                )),
            };
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let result = match commit_error {
                    None => result,
                    Some(e) => Err(StoreError::unavailable(
                        format!("commit {what}"),
                        Arc::clone(e),
                    )),
                };
                // The caller may have stopped waiting; the write stands either way.
                let _ = tx.send(result);
            });
            (ok, reply)
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let sender = jobs
                .as_ref()
                .ok_or_else(|| StoreError::Closed("the store was closed".into()))?;
            sender.send(job).map_err(|_| {
                StoreError::Closed(format!("the SQLite writer thread stopped before {what}"))
            })?;
        }
        rx.await.map_err(|_| {
            StoreError::Closed(format!(
                "the SQLite writer dropped {what} (the operation panicked)"
            ))
        })?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Runs one prepared statement that takes no parameters (`SAVEPOINT`, `COMMIT`, ...).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The writer thread: take the first job, everything else pending up to `max_batch`, run
/// them all in one transaction (each in its own savepoint so one failure does not undo the
/// others), commit once, then answer every caller.
fn run(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    aging_step_ms: u64,
    ready: watch::Sender<u64>,
    counters: &Counters,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::with_capacity(max_batch.min(64));
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            let e = Arc::new(e);
            tracing::warn!(error = %e, "SQLite writer could not begin a transaction");
            for job in jobs {
                let (_, reply) = job(Err(&e));
                reply(None);
            }
            continue;
        }
        let mut ctx = WriteCtx {
            conn: &conn,
            aging_step_ms,
            made_ready: false,
            counts: CountChanges::default(),
        };
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            let ready_before = ctx.made_ready;
            if let Err(e) = exec(&conn, "SAVEPOINT op") {
                let (_, reply) = job(Err(&Arc::new(e)));
                replies.push(reply);
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| job(Ok(&mut ctx)))) {
                Ok((true, reply)) => {
                    let _ = exec(&conn, "RELEASE op");
                    replies.push(reply);
                }
                Ok((false, reply)) => {
                    ctx.made_ready = ready_before;
                    let _ = exec(&conn, "ROLLBACK TO op");
                    let _ = exec(&conn, "RELEASE op");
                    replies.push(reply);
                }
                Err(_) => {
                    // The job's reply channel was dropped with it: its caller gets `Closed`.
                    ctx.made_ready = ready_before;
                    tracing::error!("a SQLite write operation panicked; it was rolled back");
                    let _ = exec(&conn, "ROLLBACK TO op");
                    let _ = exec(&conn, "RELEASE op");
                }
            }
        }
        let made_ready = ctx.made_ready;
        let commit = exec(&conn, "COMMIT").map_err(Arc::new);
        if let Err(e) = &commit {
            tracing::warn!(error = %e, "SQLite group commit failed; rolling back");
            let _ = exec(&conn, "ROLLBACK");
        } else {
            counters
                .operations
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            if made_ready {
                ready.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        let commit_error = commit.err();
        for reply in replies {
            reply(commit_error.as_ref());
        }
    }
}
