//! `module_delete`: the tenant's module and its names go, in one transaction, unless an
//! unfinished task of that tenant names it.
//!
//! The module's row is locked `FOR UPDATE` first. `task_insert` locks the rows of the
//! modules it names `FOR KEY SHARE` (and fails when one is gone), so the two serialize on
//! that row: an insert that got there first has committed its tasks before the count below
//! runs (a new statement, so a new snapshot under READ COMMITTED) and the delete is refused;
//! an insert that comes after the delete finds no module and is refused.

use fabric_store::{ModuleDeleteParams, ModuleDeleted, ModuleRef, StoreError, rules};

use super::{begin, commit};
use crate::db::{Db, execute, query_opt};
use crate::rows::{MODULE_COLUMNS, read_module_info};

pub(crate) async fn module_delete(
    db: &Db,
    p: ModuleDeleteParams,
) -> Result<ModuleDeleted, StoreError> {
    let mut client = db.client("module_delete").await?;
    let tx = begin(&mut client, "begin module_delete").await?;
    let id = match &p.module {
        ModuleRef::Id(id) => id.to_string(),
        ModuleRef::Name(name) => {
            let row = query_opt(
                &tx,
                "resolve a module name",
                "SELECT module_id FROM module_names WHERE tenant = $1 AND name = $2",
                &[&p.tenant, name],
            )
            .await?;
            match row {
                Some(row) => row.get(0),
                None => return Ok(ModuleDeleted::NotFound),
            }
        }
    };
    let row = query_opt(
        &tx,
        "lock a module",
        &format!("SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = $1 AND id = $2 FOR UPDATE"),
        &[&p.tenant, &id],
    )
    .await?;
    let Some(row) = row else {
        return Ok(ModuleDeleted::NotFound);
    };
    let info = read_module_info(&row)?;
    let unfinished: i64 = query_opt(
        &tx,
        "count the tasks that use a module",
        &format!(
            "SELECT count(*) FROM tasks WHERE tenant = $1 AND module = $2 AND {}",
            rules::UNFINISHED_SQL
        ),
        &[&p.tenant, &id],
    )
    .await?
    .map_or(0, |row| row.get(0));
    if unfinished > 0 {
        return Ok(ModuleDeleted::InUse {
            id: info.id,
            unfinished: unfinished as u64,
        });
    }
    execute(
        &tx,
        "delete a module's names",
        "DELETE FROM module_names WHERE tenant = $1 AND module_id = $2",
        &[&p.tenant, &id],
    )
    .await?;
    execute(
        &tx,
        "delete a module",
        "DELETE FROM modules WHERE tenant = $1 AND id = $2",
        &[&p.tenant, &id],
    )
    .await?;
    commit(tx, "commit module_delete").await?;
    Ok(ModuleDeleted::Deleted(info))
}
