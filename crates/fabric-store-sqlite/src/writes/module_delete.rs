//! `module_delete`: the tenant's module and its names go, in the writer's transaction,
//! unless an unfinished task of that tenant names it.

use fabric_store::{ModuleDeleteParams, ModuleDeleted, ModuleRef, StoreError, rules};
use rusqlite::{OptionalExtension, params};

use crate::db_err;
use crate::rows::{MODULE_COLUMNS, module_info, read_module_info};
use crate::writer::WriteCtx;

pub(crate) fn module_delete(
    ctx: &mut WriteCtx<'_>,
    p: ModuleDeleteParams,
) -> Result<ModuleDeleted, StoreError> {
    let conn = ctx.conn;
    let id = match p.module {
        ModuleRef::Id(id) => id.to_string(),
        ModuleRef::Name(name) => {
            let id: Option<String> = conn
                .prepare_cached(
                    "SELECT module_id FROM module_names WHERE tenant = ?1 AND name = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![p.tenant, name], |r| r.get(0))
                        .optional()
                })
                .map_err(db_err("resolve a module name"))?;
            match id {
                Some(id) => id,
                None => return Ok(ModuleDeleted::NotFound),
            }
        }
    };
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE tenant = ?1 AND id = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![p.tenant, id], read_module_info)
                .optional()
        })
        .map_err(db_err("read a module"))?;
    let Some(raw) = raw else {
        return Ok(ModuleDeleted::NotFound);
    };
    let info = module_info(raw)?;
    let unfinished: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM tasks WHERE tenant = ?1 AND module = ?2 AND {}",
            rules::UNFINISHED_SQL
        ))
        .and_then(|mut s| s.query_row(params![p.tenant, id], |r| r.get(0)))
        .map_err(db_err("count the tasks that use a module"))?;
    if unfinished > 0 {
        return Ok(ModuleDeleted::InUse {
            id: info.id,
            unfinished: unfinished as u64,
        });
    }
    conn.prepare_cached("DELETE FROM module_names WHERE tenant = ?1 AND module_id = ?2")
        .and_then(|mut s| s.execute(params![p.tenant, id]))
        .map_err(db_err("delete a module's names"))?;
    conn.prepare_cached("DELETE FROM modules WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut s| s.execute(params![p.tenant, id]))
        .map_err(db_err("delete a module"))?;
    Ok(ModuleDeleted::Deleted(info))
}
