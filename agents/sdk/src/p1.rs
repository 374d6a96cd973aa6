//! Telemetry for core modules (`wasm32-wasip1`): the host's `fabric` imports, which take
//! pointers and lengths into this module's memory and return 0 or a refusal code.
#![allow(unsafe_code)]

use crate::Refused;

#[link(wasm_import_module = "fabric")]
unsafe extern "C" {
    // Safe to call: the host only reads `len` bytes at `ptr` of this module's memory,
    // after checking that they lie in it, and writes nothing.
    #[link_name = "kpi"]
    safe fn fabric_kpi(name_ptr: *const u8, name_len: usize, value: f64) -> i32;
    #[link_name = "progress"]
    safe fn fabric_progress(done: f64, message_ptr: *const u8, message_len: usize) -> i32;
}

pub fn kpi(name: &str, value: f64) -> Result<(), Refused> {
    taken(fabric_kpi(name.as_ptr(), name.len(), value))
}

pub fn progress(done: f64, message: &str) -> Result<(), Refused> {
    taken(fabric_progress(done, message.as_ptr(), message.len()))
}

fn taken(code: i32) -> Result<(), Refused> {
    match code {
        0 => Ok(()),
        code => Err(Refused::Code(code)),
    }
}
