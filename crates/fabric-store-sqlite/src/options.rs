//! How a SQLite store is opened: durability, waiting, concurrency, batching, aging.

use std::time::Duration;

use fabric_store::AGING_STEP_MS;

/// SQLite's `synchronous` setting for the write connection (the database is always in WAL
/// mode). Either way a committed transaction survives the fabric process dying — a crash,
/// a panic, a `kill -9` — because the commit is in the operating system's hands once
/// `COMMIT` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=NORMAL` (the default): the WAL is synced to disk only at checkpoints,
    /// not at every commit. Survives a process crash; on **power loss or an OS crash** the
    /// last transactions acknowledged before it may be lost (the database stays
    /// consistent, it just rolls back to an earlier commit).
    #[default]
    Normal,
    /// `synchronous=FULL`: the WAL is synced at every commit (group commit amortizes the
    /// sync over every operation in the batch). Also survives power loss, at the price of
    /// one `fsync` per transaction.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Options of [`crate::SqliteStore::open`]; each default is a named constant.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of commits; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock held by another connection or process
    /// before failing with `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// Read-only connections kept open for reads (WAL lets them run beside the writer).
    pub readers: usize,
    /// The most operations the writer applies in one group-commit transaction.
    pub max_batch: usize,
    /// The aging step of the claim order; see [`fabric_store::claim_sort_key`]. It is used
    /// when a task becomes queued, so changing it affects only tasks queued afterwards.
    pub aging_step: Duration,
}

impl SqliteOptions {
    /// 5 seconds.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// 4 read connections.
    pub const DEFAULT_READERS: usize = 4;
    /// 256 operations per transaction.
    pub const DEFAULT_MAX_BATCH: usize = 256;
    /// [`fabric_store::AGING_STEP_MS`]: 30 seconds.
    pub const DEFAULT_AGING_STEP: Duration = Duration::from_millis(AGING_STEP_MS);
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            readers: Self::DEFAULT_READERS,
            max_batch: Self::DEFAULT_MAX_BATCH,
            aging_step: Self::DEFAULT_AGING_STEP,
        }
    }
}
