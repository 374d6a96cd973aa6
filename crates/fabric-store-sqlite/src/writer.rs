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

use crate::checkpoint::{self, CHECKPOINT_PAGES, Checkpointer, WRITER_CHECKPOINT_PAGES};
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
    /// Starts the writer thread on `conn`; `checkpointer` takes the WAL checkpoints.
    pub(crate) fn start(
        conn: Connection,
        checkpointer: Checkpointer,
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
                checkpoint::watch_wal(&conn);
                run(
                    conn,
                    &checkpointer,
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
                Err(e) => Err(group_failed(format!("begin a transaction for {what}"), e)),
            };
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let result = match commit_error {
                    None => result,
                    Some(e) => Err(group_failed(format!("commit {what}"), e)),
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

/// How one job went inside the group's transaction.
enum Ran {
    /// Applied (or rolled back to its own savepoint): its reply, if it did not panic, waits
    /// for the commit.
    Kept(Option<Reply>),
    /// It failed as the first job of the transaction, which was rolled back whole.
    RolledBack,
    /// It failed and SQLite rolled back the whole transaction with it (an I/O error, a full
    /// disk): the jobs before it lost their writes too.
    TransactionLost,
}

/// The writer thread: take the first job, run it in a new transaction, let every job that
/// is pending (or arrives meanwhile) join it up to `max_batch`, commit once, then answer
/// every caller. Each job after the first runs in its own savepoint, so its failure does
/// not undo the others; the first needs none (if it fails, the transaction holds nothing
/// else and is rolled back whole).
fn run(
    conn: Connection,
    checkpointer: &Checkpointer,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    aging_step_ms: u64,
    ready: watch::Sender<u64>,
    counters: &Counters,
) {
    while let Ok(first) = rx.recv() {
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            let e = Arc::new(e);
            tracing::warn!(error = %e, "SQLite writer could not begin a transaction");
            // This job and those already waiting fail; later ones try again.
            let (_, reply) = first(Err(&e));
            reply(None);
            while let Ok(job) = rx.try_recv() {
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
        let mut replies: Vec<Reply> = Vec::new();
        let mut jobs = 0;
        let mut next = Some(first);
        let mut open = true;
        while let Some(job) = next.take() {
            jobs += 1;
            match run_job(&mut ctx, job, jobs > 1) {
                Ran::Kept(reply) => replies.extend(reply),
                Ran::RolledBack => {
                    open = false;
                    break;
                }
                Ran::TransactionLost => {
                    let lost = Arc::new(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("the group transaction was rolled back by a failing operation".into()),
                    ));
                    for reply in replies.drain(..) {
                        reply(Some(&lost));
                    }
                    open = false;
                    break;
                }
            }
            if jobs < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !open {
            continue;
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
        // After the callers have their answers: a large WAL is checkpointed (see `checkpoint`).
        let pages = checkpoint::wal_pages();
        if pages >= WRITER_CHECKPOINT_PAGES {
            if let Err(e) = checkpoint::checkpoint(&conn) {
                tracing::warn!(error = %e, pages, "SQLite WAL checkpoint failed");
            }
        } else if pages >= CHECKPOINT_PAGES {
            checkpointer.request();
        }
    }
}

/// Why a group's `BEGIN` or `COMMIT` failed, for each of its callers: `Full` when the disk
/// is (nothing of the group was written), otherwise `Unavailable`.
fn group_failed(context: String, e: &Arc<rusqlite::Error>) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        StoreError::Full {
            context,
            source: Arc::clone(e).into(),
        }
    } else {
        StoreError::unavailable(context, Arc::clone(e))
    }
}

/// Runs one job in the open transaction, in a savepoint of its own when `savepoint` (it is
/// not the first).
fn run_job(ctx: &mut WriteCtx<'_>, job: Job, savepoint: bool) -> Ran {
    let conn = ctx.conn;
    if savepoint && let Err(e) = exec(conn, "SAVEPOINT op") {
        let (_, reply) = job(Err(&Arc::new(e)));
        return Ran::Kept(Some(reply));
    }
    let ready_before = ctx.made_ready;
    let (ok, reply) = match catch_unwind(AssertUnwindSafe(|| job(Ok(&mut *ctx)))) {
        Ok((ok, reply)) => (ok, Some(reply)),
        Err(_) => {
            // The job's reply channel was dropped with it: its caller gets `Closed`.
            tracing::error!("a SQLite write operation panicked; it was rolled back");
            (false, None)
        }
    };
    if ok {
        if savepoint {
            let _ = exec(conn, "RELEASE op");
        }
        return Ran::Kept(reply);
    }
    ctx.made_ready = ready_before;
    // SQLite rolls the whole transaction back on its own after some errors (I/O, full disk).
    let whole = conn.is_autocommit();
    if savepoint && !whole {
        let _ = exec(conn, "ROLLBACK TO op");
        let _ = exec(conn, "RELEASE op");
        return Ran::Kept(reply);
    }
    if !whole {
        let _ = exec(conn, "ROLLBACK");
    }
    if let Some(reply) = reply {
        reply(None);
    }
    if savepoint {
        Ran::TransactionLost
    } else {
        Ran::RolledBack
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};

    use super::*;

    /// A writer on a fresh database with one table `t (x INTEGER NOT NULL)`.
    fn writer(dir: &tempfile::TempDir) -> (Writer, std::path::PathBuf) {
        let path = dir.path().join("w.db");
        let options = crate::SqliteOptions::default();
        let conn = crate::open_write_connection(&path, &options).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")
            .unwrap();
        let checkpointer = Checkpointer::start(&path, options.busy_timeout).unwrap();
        let (ready, _) = watch::channel(0);
        let writer = Writer::start(conn, checkpointer, 256, 1, ready).unwrap();
        (writer, path)
    }

    fn insert(ctx: &WriteCtx<'_>, x: i64) -> Result<(), StoreError> {
        ctx.conn
            .execute("INSERT INTO t (x) VALUES (?1)", [x])
            .map(drop)
            .map_err(crate::db_err("insert"))
    }

    fn stored(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Polls `future` once, which queues its write, and hands it back to be awaited.
    fn queue<F: Future + Unpin>(future: F) -> F {
        let mut future = future;
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            polled.is_pending(),
            "the write finished before it was queued"
        );
        future
    }

    /// Queues a write that blocks the writer thread until `release` is sent, so that the
    /// writes queued meanwhile join its transaction.
    fn blocker(
        writer: &Writer,
    ) -> (
        impl Future<Output = Result<(), StoreError>> + Unpin + '_,
        mpsc::Sender<()>,
    ) {
        let (release, wait) = mpsc::channel::<()>();
        let write = Box::pin(writer.write("blocker", move |ctx| {
            wait.recv().unwrap();
            insert(ctx, 0)
        }));
        (queue(write), release)
    }

    #[tokio::test]
    async fn a_failing_first_operation_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let failed = writer
            .write("fails", |ctx| {
                insert(ctx, 1)?;
                Err::<(), _>(StoreError::InvalidArgument("no".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::InvalidArgument(_))));
        writer.write("ok", |ctx| insert(ctx, 2)).await.unwrap();
        assert_eq!(stored(&path), [2]);
    }

    #[tokio::test]
    async fn writes_queued_meanwhile_join_the_transaction_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let (first, release) = blocker(&writer);
        let failing = queue(Box::pin(writer.write("fails", |ctx| {
            insert(ctx, 1)?;
            Err::<(), _>(StoreError::InvalidArgument("no".into()))
        })));
        let panicking = queue(Box::pin(writer.write("panics", |ctx| {
            insert(ctx, 2)?;
            panic!("a bug in an operation")
        })));
        let last = queue(Box::pin(writer.write("ok", |ctx| insert(ctx, 3))));
        release.send(()).unwrap();
        first.await.unwrap();
        assert!(matches!(failing.await, Err(StoreError::InvalidArgument(_))));
        assert!(matches!(
            panicking.await,
            Err::<(), _>(StoreError::Closed(_))
        ));
        last.await.unwrap();
        assert_eq!(stored(&path), [0, 3]);
        // One transaction, three operations (the panicked one has no caller left to count).
        assert_eq!(writer.counts(), (3, 1));
    }

    #[tokio::test]
    async fn an_operation_that_ends_the_transaction_fails_the_ones_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let (first, release) = blocker(&writer);
        // As SQLite does on its own after some errors (a full disk, an I/O error).
        let rolling_back = queue(Box::pin(writer.write("rolls back", |ctx| {
            ctx.conn.execute_batch("ROLLBACK").unwrap();
            Err::<(), _>(StoreError::Closed("gone".into()))
        })));
        let after = queue(Box::pin(writer.write("ok", |ctx| insert(ctx, 2))));
        release.send(()).unwrap();
        assert!(
            matches!(first.await, Err(StoreError::Unavailable { .. })),
            "a write lost with its transaction was reported as stored"
        );
        assert!(rolling_back.await.is_err());
        after.await.unwrap();
        assert_eq!(stored(&path), [2]);
    }
}
