//! Numbered migrations, applied at connect in one transaction under an advisory lock so
//! that nodes starting together migrate once, and recorded in `schema_migrations`.

use deadpool_postgres::Client;
use fabric_store::StoreError;

use crate::error::db_err;

/// Every migration, in order: `(version, file name, SQL)`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_fair_share_clocks.sql",
        include_str!("../migrations/0002_fair_share_clocks.sql"),
    ),
    (
        3,
        "0003_task_dirs.sql",
        include_str!("../migrations/0003_task_dirs.sql"),
    ),
    (
        4,
        "0004_egress.sql",
        include_str!("../migrations/0004_egress.sql"),
    ),
    (
        5,
        "0005_reports.sql",
        include_str!("../migrations/0005_reports.sql"),
    ),
    (
        6,
        "0006_workflows.sql",
        include_str!("../migrations/0006_workflows.sql"),
    ),
    (
        7,
        "0007_schedules.sql",
        include_str!("../migrations/0007_schedules.sql"),
    ),
];

/// The schema version this build writes: the number of its last migration.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock key that serializes migrations of one schema (FNV-1a of its name, so
/// nodes of different schemas do not wait on each other).
pub(crate) fn migration_lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "fabric-store-postgres migrate "
        .bytes()
        .chain(schema.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Brings `schema` up to [`SCHEMA_VERSION`], creating it when missing, all in one
/// transaction holding `pg_advisory_xact_lock`: a node that starts while another migrates
/// waits, then finds nothing left to do. Refuses a schema written by a newer build.
/// `schema` must be valid (see `options::validate_schema`): it is spliced into SQL.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_err("begin the migration transaction"))?;
    // Waiting for another node's migration is not a runaway statement.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(db_err("lift the statement timeout for migrations"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_lock_key(schema)],
    )
    .await
    .map_err(db_err("take the migration lock"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT NOT NULL PRIMARY KEY,
             name       TEXT   NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(db_err("create the schema"))?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(db_err("read the schema version"))?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > found) {
        tx.batch_execute(sql)
            .await
            .map_err(db_err("apply a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(db_err("record a migration"))?;
        tracing::info!(migration = name, schema, "applied store migration");
    }
    tx.commit().await.map_err(db_err("commit the migrations"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_schema_and_are_stable() {
        assert_eq!(migration_lock_key("fabric"), migration_lock_key("fabric"));
        assert_ne!(migration_lock_key("fabric"), migration_lock_key("fabric2"));
    }

    #[test]
    fn versions_are_numbered_in_order() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                *version,
                i as i64 + 1,
                "{name} is out of order or leaves a gap"
            );
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
    }
}
