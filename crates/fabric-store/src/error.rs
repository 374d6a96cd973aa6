//! The one error type every store operation returns.

use std::error::Error as StdError;

/// A boxed error from the backend's driver, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong in a store operation. Callers match on the variant: `Unavailable` and
/// `Full` are worth retrying later, `InvalidArgument` and `Conflict` are the caller's to fix, `Corrupt`
/// and `SchemaTooNew` need an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer (I/O, busy past the timeout,
    /// connection lost). The operation may be retried.
    #[error("store unavailable while trying to {context}")]
    Unavailable {
        /// What the store was doing.
        context: String,
        #[source]
        source: BoxError,
    },
    /// The disk (or the database's space) is full: nothing of the operation was written.
    /// Retrying after space is freed succeeds.
    #[error("the store's disk is full while trying to {context}; nothing was written")]
    Full {
        /// What the store was doing.
        context: String,
        #[source]
        source: BoxError,
    },
    /// The operation conflicts with what is stored (for example a uniqueness rule).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A task names a module its tenant does not store (never put, or deleted): nothing of
    /// the batch was written.
    #[error("tasks[{index}]: tenant {tenant:?} stores no module {module}")]
    ModuleNotFound {
        /// The task's index in its batch.
        index: usize,
        tenant: String,
        module: String,
    },
    /// A task's `after` names a task its tenant does not have (nor one earlier in the
    /// batch): nothing of the batch was written.
    #[error("tasks[{index}].after: tenant {tenant:?} has no task {id}")]
    UnknownDependency {
        /// The task's index in its batch.
        index: usize,
        tenant: String,
        id: String,
    },
    /// A task's caller-chosen `id` is already stored (or given twice in the batch):
    /// nothing of the batch was written.
    #[error("tasks[{index}].id: a task {id} already exists")]
    DuplicateTaskId {
        /// The task's index in its batch.
        index: usize,
        id: String,
    },
    /// The caller passed something the store cannot accept; the message names the field.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A stored row cannot be read back (a bad enum text, a malformed JSON column, ...).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The database was written by a newer version of the fabric than this one.
    #[error(
        "the database schema is version {found}, newer than the {supported} this build knows; \
         upgrade the fabric binary"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build can migrate to.
        supported: i64,
    },
    /// The store was shut down (or its writer died) before the operation could run.
    #[error("the store is closed: {0}")]
    Closed(String),
}

impl StoreError {
    /// An [`StoreError::Unavailable`] with this context and source.
    pub fn unavailable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Full { .. })
    }
}

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
