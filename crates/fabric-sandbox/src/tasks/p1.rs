//! The core-module (WASI preview 1) ABI of child tasks: the import `fabric.submit`, taking
//! the spec and a buffer for the id as pointers and lengths into the guest's memory and
//! returning the id's length when the child was accepted or a (negative)
//! [`SubmitRefusal::code`] when it was refused.

use std::ops::Range;

use wasmtime::{Caller, Extern, Linker};

use super::{SubmitRefusal, charge, parse};
use crate::run::P1Guest;
use crate::telemetry::MODULE;

/// Defines `fabric.submit(spec_ptr: i32, spec_len: i32, id_ptr: i32, id_cap: i32) -> i32`.
pub(crate) fn add_to_linker(linker: &mut Linker<P1Guest>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "submit", submit)?;
    Ok(())
}

fn submit(
    mut caller: Caller<'_, P1Guest>,
    spec_ptr: i32,
    spec_len: i32,
    id_ptr: i32,
    id_cap: i32,
) -> wasmtime::Result<i32> {
    charge(&mut caller)?;
    Ok(submit_child(&mut caller, spec_ptr, spec_len, id_ptr, id_cap).unwrap_or_else(|r| r.code()))
}

/// Checks the call (count, pointers, length), parses the spec where it lies in the guest's
/// memory (nothing is copied), has the host accept it, and writes its id into the buffer.
fn submit_child(
    caller: &mut Caller<'_, P1Guest>,
    spec_ptr: i32,
    spec_len: i32,
    id_ptr: i32,
    id_cap: i32,
) -> Result<i32, SubmitRefusal> {
    caller.data_mut().tasks.admit()?;
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(SubmitRefusal::BadPointer);
    };
    let size = memory.data_size(&*caller);
    let spec = span(spec_ptr, spec_len, size)?;
    let id = span(id_ptr, id_cap, size)?;
    let tasks = &caller.data().tasks;
    tasks.fits(spec.len())?;
    let parsed = std::str::from_utf8(&memory.data(&*caller)[spec.clone()])
        .map_err(|_| SubmitRefusal::NotUtf8)
        .and_then(parse);
    let tasks = &mut caller.data_mut().tasks;
    tasks.spend(spec.len());
    let child = tasks.accept(parsed?, id.len())?;
    memory.data_mut(&mut *caller)[id.start..id.start + child.len()]
        .copy_from_slice(child.as_bytes());
    Ok(i32::try_from(child.len()).expect("an id that fits in the guest's buffer fits in an i32"))
}

/// The bytes `ptr..ptr + len` of a memory of `size` bytes, or [`SubmitRefusal::BadPointer`]
/// when they do not all lie in it. Pointers and lengths are unsigned 32-bit values passed
/// as i32.
fn span(ptr: i32, len: i32, size: usize) -> Result<Range<usize>, SubmitRefusal> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(SubmitRefusal::BadPointer),
    }
}
