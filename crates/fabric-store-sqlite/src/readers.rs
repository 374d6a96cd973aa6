//! A small pool of read connections; WAL lets them read while the writer writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_store::StoreError;
use rusqlite::{Connection, OpenFlags, Transaction};

use crate::db_err;

/// A read connection's page cache, in KiB (`cache_size` takes a negative count of KiB).
/// While the writer commits, every read transaction starts on a changed database and
/// SQLite empties the reader's cache first, so a large one holds no hits, only memory:
/// at the default 2 MiB, the readers' caches filled over several minutes of a soak.
/// 256 KiB (64 pages) still holds one listing page's worth of B-tree pages.
const READER_CACHE_KIB: i64 = -256;

/// Read connections, opened on demand and kept (up to `keep`) for reuse. Each read runs in
/// its own deferred transaction, so it sees one consistent snapshot, on a blocking thread.
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    keep: usize,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, keep: usize) -> Self {
        Self {
            path,
            busy_timeout,
            keep,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(db_err(format!(
            "open a read connection to {}",
            self.path.display()
        )))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(db_err("set busy_timeout"))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(db_err("set query_only"))?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)
            .map_err(db_err("set cache_size"))?;
        crate::prepare_connection(&conn)?;
        Ok(conn)
    }

    /// Runs `op` in a read transaction on a pooled connection.
    pub(crate) async fn read<R, F>(
        self: &Arc<Self>,
        what: &'static str,
        op: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = this.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => this.open()?,
            };
            let result = {
                let tx = conn
                    .transaction()
                    .map_err(db_err(format!("begin a read for {what}")))?;
                let result = op(&tx);
                // A read transaction has nothing to keep; ending it releases the snapshot.
                let _ = tx.rollback();
                result
            };
            let mut idle = this.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < this.keep {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| {
            StoreError::Closed(format!("the SQLite read for {what} did not finish: {e}"))
        })?
    }
}
