//! Telemetry and child tasks for core modules (`wasm32-wasip1`): the host's `fabric`
//! imports, which take pointers and lengths into this module's memory and return 0 (or
//! the length of what they wrote) or a refusal code.
#![allow(unsafe_code)]

use crate::Refused;

#[link(wasm_import_module = "fabric")]
unsafe extern "C" {
    // `kpi` and `progress` are safe to call: the host only reads `len` bytes at `ptr` of
    // this module's memory, after checking that they lie in it, and writes nothing.
    #[link_name = "kpi"]
    safe fn fabric_kpi(name_ptr: *const u8, name_len: usize, value: f64) -> i32;
    #[link_name = "progress"]
    safe fn fabric_progress(done: f64, message_ptr: *const u8, message_len: usize) -> i32;
    // `submit` reads `spec_len` bytes at `spec_ptr` and writes at most `id_cap` bytes at
    // `id_ptr`, after checking that both lie in this module's memory: it is unsafe, since
    // the caller must own a writable buffer of `id_cap` bytes there.
    #[link_name = "submit"]
    fn fabric_submit(spec_ptr: *const u8, spec_len: usize, id_ptr: *mut u8, id_cap: usize) -> i32;
}

/// The id buffer `submit` passes: ids are 26 bytes, and the host refuses (code -10) one
/// that does not fit rather than cut it.
const ID_BUFFER: usize = 64;

pub fn kpi(name: &str, value: f64) -> Result<(), Refused> {
    taken(fabric_kpi(name.as_ptr(), name.len(), value))
}

pub fn progress(done: f64, message: &str) -> Result<(), Refused> {
    taken(fabric_progress(done, message.as_ptr(), message.len()))
}

pub fn submit(spec: &str) -> Result<String, Refused> {
    let mut id = [0u8; ID_BUFFER];
    // SAFETY: `id` is a buffer of `ID_BUFFER` bytes that lives through the call, and the
    // host writes at most that many bytes into it (see the declaration).
    let len = unsafe { fabric_submit(spec.as_ptr(), spec.len(), id.as_mut_ptr(), id.len()) };
    match usize::try_from(len) {
        Ok(len) if len <= ID_BUFFER => Ok(String::from_utf8_lossy(&id[..len]).into_owned()),
        _ => Err(Refused::Code(len)),
    }
}

fn taken(code: i32) -> Result<(), Refused> {
    match code {
        0 => Ok(()),
        code => Err(Refused::Code(code)),
    }
}
