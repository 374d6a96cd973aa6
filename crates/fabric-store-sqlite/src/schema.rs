//! Numbered migrations, applied in order and recorded in `PRAGMA user_version`.

use fabric_store::StoreError;
use rusqlite::Connection;

use crate::db_err;

/// One migration: a SQL file applied in a transaction of its own.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
    /// It edits `sqlite_schema` directly (under `writable_schema`), so the schema version
    /// must change for connections to reload the schema, as `ALTER` and `CREATE` do.
    edits_schema_table: bool,
}

/// Every migration, in order; the database's `user_version` is the number of the last one
/// applied.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial.sql",
        sql: include_str!("../migrations/0001_initial.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 2,
        name: "0002_cheaper_state_changes.sql",
        sql: include_str!("../migrations/0002_cheaper_state_changes.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 3,
        name: "0003_state_check_without_temp_btree.sql",
        sql: include_str!("../migrations/0003_state_check_without_temp_btree.sql"),
        edits_schema_table: true,
    },
    Migration {
        version: 4,
        name: "0004_listing_indexes_without_running.sql",
        sql: include_str!("../migrations/0004_listing_indexes_without_running.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 5,
        name: "0005_fair_share_clocks.sql",
        sql: include_str!("../migrations/0005_fair_share_clocks.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 6,
        name: "0006_task_dirs.sql",
        sql: include_str!("../migrations/0006_task_dirs.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 7,
        name: "0007_egress.sql",
        sql: include_str!("../migrations/0007_egress.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 8,
        name: "0008_reports.sql",
        sql: include_str!("../migrations/0008_reports.sql"),
        edits_schema_table: false,
    },
    Migration {
        version: 9,
        name: "0009_workflows.sql",
        sql: include_str!("../migrations/0009_workflows.sql"),
        edits_schema_table: true,
    },
    Migration {
        version: 10,
        name: "0010_schedules.sql",
        sql: include_str!("../migrations/0010_schedules.sql"),
        edits_schema_table: false,
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the database up to [`SCHEMA_VERSION`], each migration in its own transaction.
/// Refuses a database written by a newer build. Open a new connection afterwards: this one
/// may hold the schema as it was before.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies the migrations up to `target` (tests build old databases with it).
pub(crate) fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db_err("read the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let pending = MIGRATIONS
        .iter()
        .filter(|m| m.version > found && m.version <= target);
    for migration in pending {
        let name = migration.name;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err(format!("begin migration {name}")))?;
        // Re-check under the write lock: another process may have migrated meanwhile.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(db_err("read the schema version"))?;
        if now >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql)
            .map_err(db_err(format!("apply migration {name}")))?;
        if migration.edits_schema_table {
            let schema: i64 = tx
                .query_row("PRAGMA schema_version", [], |row| row.get(0))
                .map_err(db_err("read the schema cookie"))?;
            tx.pragma_update(None, "schema_version", schema + 1)
                .map_err(db_err(format!("record migration {name}")))?;
        }
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(db_err(format!("record migration {name}")))?;
        tx.commit()
            .map_err(db_err(format!("commit migration {name}")))?;
        tracing::info!(migration = name, "applied store migration");
    }
    Ok(())
}
