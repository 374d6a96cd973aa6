//! The core-module (WASI preview 1) ABI of telemetry: the imports `fabric.kpi` and
//! `fabric.progress`, taking pointers and lengths into the guest's memory and returning 0
//! when the call was taken or a [`TelemetryRefusal::code`] when it was refused.

use fabric_types::{MAX_KPI_NAME_BYTES, MAX_PROGRESS_MESSAGE_BYTES, TelemetryRefusal};
use wasmtime::{Caller, Extern, Linker};

use super::charge;
use crate::run::P1Guest;

/// The module core modules import telemetry from.
pub const MODULE: &str = "fabric";

/// Defines `fabric.kpi(name_ptr: i32, name_len: i32, value: f64) -> i32` and
/// `fabric.progress(done: f64, msg_ptr: i32, msg_len: i32) -> i32`.
pub(crate) fn add_to_linker(linker: &mut Linker<P1Guest>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "kpi", kpi)?;
    linker.func_wrap(MODULE, "progress", progress)?;
    Ok(())
}

fn kpi(mut caller: Caller<'_, P1Guest>, ptr: i32, len: i32, value: f64) -> wasmtime::Result<i32> {
    charge(&mut caller)?;
    Ok(code(record_kpi(&mut caller, ptr, len, value)))
}

fn progress(
    mut caller: Caller<'_, P1Guest>,
    done: f64,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    charge(&mut caller)?;
    Ok(code(report_progress(&mut caller, done, ptr, len)))
}

fn record_kpi(
    caller: &mut Caller<'_, P1Guest>,
    ptr: i32,
    len: i32,
    value: f64,
) -> Result<(), TelemetryRefusal> {
    caller.data_mut().telemetry.admit()?;
    let mut buf = [0; MAX_KPI_NAME_BYTES];
    let name = read(caller, ptr, len, &mut buf, TelemetryRefusal::BadName)?;
    caller.data_mut().telemetry.kpi(name, value)
}

fn report_progress(
    caller: &mut Caller<'_, P1Guest>,
    done: f64,
    ptr: i32,
    len: i32,
) -> Result<(), TelemetryRefusal> {
    caller.data_mut().telemetry.admit()?;
    let mut buf = [0; MAX_PROGRESS_MESSAGE_BYTES];
    let message = read(caller, ptr, len, &mut buf, TelemetryRefusal::BadMessage)?;
    caller.data_mut().telemetry.progress(done, message)
}

/// The UTF-8 text at `ptr..ptr + len` of the guest's memory `memory`, copied into `buf`.
/// [`TelemetryRefusal::BadPointer`] when those bytes do not all lie in the memory (or the
/// module exports none), `bad` when they are more than `buf` holds (known from `len` alone,
/// nothing is copied) or not UTF-8.
fn read<'b>(
    caller: &mut Caller<'_, P1Guest>,
    ptr: i32,
    len: i32,
    buf: &'b mut [u8],
    bad: TelemetryRefusal,
) -> Result<&'b str, TelemetryRefusal> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(TelemetryRefusal::BadPointer);
    };
    // Pointers and lengths are unsigned 32-bit values passed as i32.
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = memory.data(&*caller);
    if start.checked_add(len).is_none_or(|end| end > data.len()) {
        return Err(TelemetryRefusal::BadPointer);
    }
    let Some(buf) = buf.get_mut(..len) else {
        return Err(bad);
    };
    buf.copy_from_slice(&data[start..start + len]);
    std::str::from_utf8(buf).map_err(|_| bad)
}

fn code(result: Result<(), TelemetryRefusal>) -> i32 {
    result.err().map_or(0, TelemetryRefusal::code)
}
