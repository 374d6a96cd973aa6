//! Numbered migrations, applied in order and recorded in `PRAGMA user_version`.

use fabric_store::StoreError;
use rusqlite::Connection;

use crate::db_err;

/// Every migration, in order; the database's `user_version` is the number of the last one
/// applied.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_initial.sql",
        include_str!("../migrations/0001_initial.sql"),
    ),
    (
        2,
        "0002_cheaper_state_changes.sql",
        include_str!("../migrations/0002_cheaper_state_changes.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the database up to [`SCHEMA_VERSION`], each migration in its own transaction.
/// Refuses a database written by a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db_err("read the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > found) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err(format!("begin migration {name}")))?;
        // Re-check under the write lock: another process may have migrated meanwhile.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(db_err("read the schema version"))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(db_err(format!("apply migration {name}")))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(db_err(format!("record migration {name}")))?;
        tx.commit()
            .map_err(db_err(format!("commit migration {name}")))?;
        tracing::info!(migration = name, "applied store migration");
    }
    Ok(())
}
