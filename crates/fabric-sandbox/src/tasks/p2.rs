//! The component ABI of child tasks: `fabric:agent/tasks@0.1.0` of
//! `wit/fabric-agent.wit`, whose `submit` returns the child's id or the refusal's message.
//!
//! Defined with `func_wrap` for the reasons telemetry is (see `telemetry/p2.rs`): the
//! host charges each call's fuel from the store, and takes the spec as a [`WasmStr`], read
//! in place. The planner agent, whose bindings `wit-bindgen` generates from the WIT file,
//! links against this definition in the tests: a drift from the WIT file fails them.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmStr};

use super::{SubmitRefusal, charge, parse};
use crate::run::P2Guest;

/// The interface's name as components import it.
pub const INTERFACE: &str = "fabric:agent/tasks@0.1.0";

/// Defines `submit` of [`INTERFACE`].
pub(crate) fn add_to_linker(linker: &mut Linker<P2Guest>) -> wasmtime::Result<()> {
    let mut tasks = linker.instance(INTERFACE)?;
    tasks.func_wrap(
        "submit",
        |mut store: StoreContextMut<'_, P2Guest>, (spec,): (WasmStr,)| {
            charge(&mut store)?;
            Ok((submit_child(&mut store, &spec).map_err(|refusal| refusal.to_string()),))
        },
    )?;
    Ok(())
}

/// Checks the call (count; Wasmtime checked, before the call, that the spec lies in the
/// guest's memory and is within the bytes one host call may read), decodes the spec in
/// place (a UTF-8 string is not copied), checks its length, parses it and has the host
/// accept it.
fn submit_child(
    store: &mut StoreContextMut<'_, P2Guest>,
    spec: &WasmStr,
) -> Result<String, SubmitRefusal> {
    store.data_mut().tasks.admit()?;
    let (len, parsed) = {
        let text = spec.to_str(&*store).map_err(|_| SubmitRefusal::NotUtf8)?;
        store.data().tasks.fits(text.len())?;
        (text.len(), parse(&text))
    };
    let tasks = &mut store.data_mut().tasks;
    tasks.spend(len);
    tasks.accept(parsed?, usize::MAX)
}
