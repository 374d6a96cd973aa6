//! How a PostgreSQL store connects: schema, pool, timeouts, aging and wake-ups.

use std::time::Duration;

use fabric_store::{AGING_STEP_MS, StoreError};

/// Options of [`crate::PostgresStore::connect`]; each default is a named constant.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema that holds the fabric's tables; created (with its tables) at connect when
    /// missing. Lowercase letters, digits and `_`, starting with a letter or `_`, at most 63
    /// characters. Nodes that share work must use the same schema.
    pub schema: String,
    /// The most connections the pool opens (the `LISTEN` connection comes on top).
    pub pool_size: usize,
    /// The aging step of the claim order; see [`fabric_store::claim_sort_key`]. It is used
    /// when a task becomes queued, so nodes sharing a schema should agree on it.
    pub aging_step: Duration,
    /// The server aborts any one statement that runs longer (`statement_timeout`); zero
    /// means no limit. The store answers such an abort with `StoreError::Unavailable`.
    pub statement_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long an operation waits for a free pooled connection when all are busy.
    pub acquire_timeout: Duration,
    /// The `application_name` of every connection, as `pg_stat_activity` shows it.
    pub application_name: String,
    /// Keep a dedicated connection that `LISTEN`s for other nodes' ready work and bumps the
    /// ready signal (see [`fabric_store::Capabilities::listen_notify`]).
    pub listen: bool,
}

impl PostgresOptions {
    /// `fabric`.
    pub const DEFAULT_SCHEMA: &'static str = "fabric";
    /// 16 connections.
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// [`fabric_store::AGING_STEP_MS`]: 30 seconds.
    pub const DEFAULT_AGING_STEP: Duration = Duration::from_millis(AGING_STEP_MS);
    /// 30 seconds.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 5 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// 30 seconds.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `fabric`.
    pub const DEFAULT_APPLICATION_NAME: &'static str = "fabric";
    /// The longest aging step accepted: 30 days (so sort keys stay far from overflow).
    pub const MAX_AGING_STEP: Duration = Duration::from_secs(30 * 24 * 3600);

    /// These options with another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Checks every field; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_schema(&self.schema)?;
        if self.pool_size == 0 {
            return Err(StoreError::InvalidArgument(
                "pool_size must be at least 1".into(),
            ));
        }
        if self.aging_step.is_zero() || self.aging_step > Self::MAX_AGING_STEP {
            return Err(StoreError::InvalidArgument(format!(
                "aging_step {:?} must be from 1 ms to {:?}",
                self.aging_step,
                Self::MAX_AGING_STEP
            )));
        }
        if self.connect_timeout.is_zero() || self.acquire_timeout.is_zero() {
            return Err(StoreError::InvalidArgument(
                "connect_timeout and acquire_timeout must be positive".into(),
            ));
        }
        if !self
            .application_name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\\')
        {
            return Err(StoreError::InvalidArgument(format!(
                "application_name {:?} must be printable ASCII without spaces or backslashes",
                self.application_name
            )));
        }
        Ok(())
    }

    /// The aging step in milliseconds (valid options only).
    pub(crate) fn aging_step_ms(&self) -> u64 {
        u64::try_from(self.aging_step.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: Self::DEFAULT_SCHEMA.to_string(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            aging_step: Self::DEFAULT_AGING_STEP,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            application_name: Self::DEFAULT_APPLICATION_NAME.to_string(),
            listen: true,
        }
    }
}

/// A schema name is used unquoted in SQL and in the connection's `search_path`, so only
/// plain lowercase identifiers are accepted.
pub(crate) fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || schema.len() > 63 || schema.starts_with("pg_") {
        return Err(StoreError::InvalidArgument(format!(
            "schema {schema:?} must be 1 to 63 lowercase letters, digits or `_`, start with a \
             letter or `_`, and not start with `pg_`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PostgresOptions::default().validate().unwrap();
        assert_eq!(PostgresOptions::default().aging_step_ms(), AGING_STEP_MS);
    }

    #[test]
    fn bad_schema_names_are_refused() {
        for bad in [
            "",
            "Fabric",
            "1abc",
            "a-b",
            "a b",
            "pg_fabric",
            "x\"y",
            &"a".repeat(64),
        ] {
            let err = PostgresOptions::default().with_schema(bad).validate();
            assert!(
                matches!(err, Err(StoreError::InvalidArgument(_))),
                "{bad:?}: {err:?}"
            );
        }
        for good in ["fabric", "_x", "fabric_test_123", &"a".repeat(63)] {
            PostgresOptions::default()
                .with_schema(good)
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn other_fields_are_checked() {
        let bad = [
            PostgresOptions {
                pool_size: 0,
                ..Default::default()
            },
            PostgresOptions {
                aging_step: Duration::ZERO,
                ..Default::default()
            },
            PostgresOptions {
                aging_step: PostgresOptions::MAX_AGING_STEP + Duration::from_millis(1),
                ..Default::default()
            },
            PostgresOptions {
                connect_timeout: Duration::ZERO,
                ..Default::default()
            },
            PostgresOptions {
                application_name: "two words".into(),
                ..Default::default()
            },
        ];
        for options in bad {
            assert!(
                matches!(options.validate(), Err(StoreError::InvalidArgument(_))),
                "{options:?}"
            );
        }
    }
}
