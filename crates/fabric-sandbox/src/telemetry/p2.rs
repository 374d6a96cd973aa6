//! The component ABI of telemetry: `fabric:agent/telemetry@0.1.0` of
//! `wit/fabric-agent.wit`, whose calls return `ok` or the refusal's message.
//!
//! Defined with `func_wrap` rather than `wasmtime::component::bindgen!`: the host needs
//! the store in each call to charge its fuel (`bindgen!` gives imports the store only with
//! Wasmtime's `component-model-async` feature, which this build leaves off), and it takes
//! strings as [`WasmStr`] so that a call past the limit reads nothing of the guest's. The
//! reporter agent, whose bindings `wit-bindgen` generates from the WIT file, links against
//! these definitions in the tests: a drift from the WIT file fails them.

use std::str;
use std::sync::LazyLock;

use fabric_types::{MAX_KPI_NAME_BYTES, MAX_PROGRESS_MESSAGE_BYTES, TelemetryRefusal};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmStr};

use super::charge;
use crate::run::P2Guest;

/// The interface's name as components import it.
pub const INTERFACE: &str = "fabric:agent/telemetry@0.1.0";

/// What a call returns to the guest: `ok`, or the refusal's message.
type Answer = (Result<(), &'static str>,);

/// Each refusal's message, made once, so that refusing allocates nothing in the host.
static MESSAGES: LazyLock<[String; 6]> =
    LazyLock::new(|| TelemetryRefusal::ALL.map(|refusal| refusal.to_string()));

/// Defines `kpi` and `progress` of [`INTERFACE`].
pub(crate) fn add_to_linker(linker: &mut Linker<P2Guest>) -> wasmtime::Result<()> {
    let mut telemetry = linker.instance(INTERFACE)?;
    telemetry.func_wrap(
        "kpi",
        |mut store: StoreContextMut<'_, P2Guest>, (name, value): (WasmStr, f64)| {
            charge(&mut store)?;
            Ok(answer(record_kpi(&mut store, &name, value)))
        },
    )?;
    telemetry.func_wrap(
        "progress",
        |mut store: StoreContextMut<'_, P2Guest>, (done, message): (f64, WasmStr)| {
            charge(&mut store)?;
            Ok(answer(report_progress(&mut store, done, &message)))
        },
    )?;
    Ok(())
}

fn record_kpi(
    store: &mut StoreContextMut<'_, P2Guest>,
    name: &WasmStr,
    value: f64,
) -> Result<(), TelemetryRefusal> {
    store.data_mut().telemetry.admit()?;
    let mut buf = [0; MAX_KPI_NAME_BYTES];
    let name = read(store, name, &mut buf, TelemetryRefusal::BadName)?;
    store.data_mut().telemetry.kpi(name, value)
}

fn report_progress(
    store: &mut StoreContextMut<'_, P2Guest>,
    done: f64,
    message: &WasmStr,
) -> Result<(), TelemetryRefusal> {
    store.data_mut().telemetry.admit()?;
    let mut buf = [0; MAX_PROGRESS_MESSAGE_BYTES];
    let message = read(store, message, &mut buf, TelemetryRefusal::BadMessage)?;
    store.data_mut().telemetry.progress(done, message)
}

/// The guest's string copied into `buf`; `bad` when it is longer than `buf` or not
/// valid. Wasmtime checked, before the call, that it lies in the guest's memory and is
/// within the bytes one host call may read; a UTF-8 string is read in place, not copied.
fn read<'b>(
    store: &StoreContextMut<'_, P2Guest>,
    text: &WasmStr,
    buf: &'b mut [u8],
    bad: TelemetryRefusal,
) -> Result<&'b str, TelemetryRefusal> {
    let text = text.to_str(store).map_err(|_| bad)?;
    let buf = buf.get_mut(..text.len()).ok_or(bad)?;
    buf.copy_from_slice(text.as_bytes());
    Ok(str::from_utf8(buf).expect("copied from a str"))
}

fn answer(result: Result<(), TelemetryRefusal>) -> Answer {
    (result.map_err(|refusal| MESSAGES[refusal.code() as usize - 1].as_str()),)
}
