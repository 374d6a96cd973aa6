//! Maps driver and pool errors to [`StoreError`] by what the caller can do about them.

use deadpool_postgres::PoolError;
use fabric_store::StoreError;

/// A driver error as a [`StoreError`] saying what the store was doing.
///
/// By SQLSTATE class: `23` (a constraint) is a `Conflict`, `22` (bad data) an
/// `InvalidArgument`, `XX` (corruption) and `42`/`3F` (the schema is not what this build
/// expects: a missing table, no privilege) `Corrupt`; everything else — a lost connection,
/// a server shutting down, a statement timeout, a serialization failure or deadlock, too
/// many connections — is `Unavailable`, worth retrying.
pub(crate) fn db_err(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| classify(context, e)
}

pub(crate) fn classify(context: &str, e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code().map(|c| c.code().to_string()) else {
        return StoreError::unavailable(context, e);
    };
    let message = e
        .as_db_error()
        .map(|d| d.to_string())
        .unwrap_or_else(|| e.to_string());
    if code == "53100" {
        // disk_full
        return StoreError::Full {
            context: context.to_owned(),
            source: e.into(),
        };
    }
    match &code[..2] {
        "23" => StoreError::Conflict(format!("{context}: {message}")),
        "22" => StoreError::InvalidArgument(format!("{context}: {message}")),
        "XX" | "42" | "3F" => {
            StoreError::Corrupt(format!("{context}: {message} (SQLSTATE {code})"))
        }
        _ => StoreError::unavailable(context, e),
    }
}

/// A pool error: a closed pool is `Closed`, everything else (no free connection in time,
/// the server unreachable) is `Unavailable`.
pub(crate) fn pool_err(context: &'static str) -> impl FnOnce(PoolError) -> StoreError {
    move |e| match e {
        PoolError::Closed => {
            StoreError::Closed(format!("the connection pool is closed ({context})"))
        }
        PoolError::Backend(e) => classify(context, e),
        other => {
            StoreError::unavailable(format!("get a connection to {context}"), other.to_string())
        }
    }
}

/// A stored value that cannot be read back.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
