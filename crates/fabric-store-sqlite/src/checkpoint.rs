//! WAL checkpoints on a thread of their own, so the writer never stalls copying pages back
//! into the database file and syncing it.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses its threshold, on the
//! committing connection: with one writer thread, every caller in that group waits for it.
//! Instead the writer registers a WAL hook that notes the WAL's size after each commit, and
//! past [`CHECKPOINT_PAGES`] asks this thread for a `PASSIVE` checkpoint, which runs beside
//! new commits. Durability is unchanged: a checkpoint syncs the WAL before copying it, as
//! before; it only happens elsewhere.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use fabric_store::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::db_err;

/// The WAL size (in pages) past which the writer asks for a checkpoint: SQLite's own
/// `wal_autocheckpoint` default.
pub(crate) const CHECKPOINT_PAGES: i64 = 1000;

/// The WAL size past which the writer checkpoints itself after a commit, because the
/// checkpoint thread is not keeping up (or cannot open the database); it bounds the WAL.
pub(crate) const WRITER_CHECKPOINT_PAGES: i64 = 16 * CHECKPOINT_PAGES;

thread_local! {
    /// Pages in the WAL after the last commit on this thread, noted by [`note_wal_size`].
    static WAL_PAGES: Cell<i64> = const { Cell::new(0) };
}

/// The WAL hook of the write connection: remembers the WAL's size for [`wal_pages`]. (It
/// replaces SQLite's automatic checkpoint, which is a WAL hook too.)
fn note_wal_size(_: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(i64::from(pages)));
    Ok(())
}

/// Makes `conn` note its WAL's size after each commit instead of checkpointing itself.
pub(crate) fn watch_wal(conn: &Connection) {
    conn.wal_hook(Some(note_wal_size));
}

/// The pages in the WAL after the last commit made on this thread.
pub(crate) fn wal_pages() -> i64 {
    WAL_PAGES.with(Cell::get)
}

/// Runs a `PASSIVE` checkpoint on `conn`: copies what it can without waiting for readers or
/// the writer.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// The handle to the checkpoint thread. Dropping it stops the thread (after the checkpoint
/// in progress, if any) and waits for it.
pub(crate) struct Checkpointer {
    requests: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens a connection of its own to `path` and starts the thread.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(db_err(format!(
            "open a checkpoint connection to {}",
            path.display()
        )))?;
        conn.busy_timeout(busy_timeout)
            .map_err(db_err("set busy_timeout"))?;
        // At most one request waits: a checkpoint covers every commit before it.
        let (requests, rx) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("fabric-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &rx))
            .map_err(|e| StoreError::unavailable("start the SQLite checkpoint thread", e))?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint soon; one already asked for and not started covers this one.
    pub(crate) fn request(&self) {
        if let Some(requests) = &self.requests {
            match requests.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the SQLite checkpoint thread stopped");
                }
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, requests: &Receiver<()>) {
    while requests.recv().is_ok() {
        if let Err(e) = checkpoint(conn) {
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; the next one will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_checkpoint_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let options = crate::SqliteOptions::default();
        let conn = crate::open_write_connection(&path, &options).unwrap();
        watch_wal(&conn);
        conn.execute_batch(
            "BEGIN; CREATE TABLE t (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO t SELECT zeroblob(1000) FROM n; COMMIT;",
        )
        .unwrap();
        // The hook saw the commit: SQLite's own checkpoint did not run (it would be a hook
        // too), so the pages are all in the WAL and none in the database file yet.
        assert!(wal_pages() >= 25, "{} pages in the WAL", wal_pages());
        let before = std::fs::metadata(&path).unwrap().len();

        let checkpointer = Checkpointer::start(&path, options.busy_timeout).unwrap();
        checkpointer.request();
        // Dropping waits for the thread, which first takes the pending request.
        drop(checkpointer);
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after >= before + 25 * 4096, "{before} -> {after} bytes");
    }
}
