//! Bounds on what one host call may do, whatever the guest asks: the fuel the fabric's own
//! calls cost, the bytes a call may copy from the guest into the host, the random bytes
//! one call may ask the host to allocate, and random bytes for preview 1 modules written
//! straight into the guest's memory in slices that check the deadline.

use rand::RngCore;
use wasmtime::{AsContextMut, Caller, Extern, Linker};

use crate::run::P1Guest;

/// The most random bytes one `wasi:random` `get-random-bytes` call of a component may ask
/// for: the host allocates them before copying them into the guest. Asking for more
/// traps. Preview 1 modules have no such limit: their `random_get` fills the guest's own
/// memory in slices ([`RANDOM_SLICE`]) and allocates nothing.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// The least a single host call may copy from the guest into the host (an `fd_write`'s
/// buffers, a string or list passed to a component's import), whatever the attempt's
/// output limits. A call over its attempt's bound fails with `ENOMEM` in a preview 1
/// module; it is refused in a component. See [`hostcall_bytes`].
pub const MIN_HOSTCALL_BYTES: usize = 4 << 20;

/// `random_get` of a preview 1 module fills this many bytes at a time, checking the
/// deadline and cancellation before each slice.
pub const RANDOM_SLICE: usize = 64 << 10;

/// What a call may copy beyond its data: its argument arrays (a preview 1 `fd_write`'s
/// iovec array, say), so that a call of exactly the bound's data is taken.
pub const HOSTCALL_ARGS_BYTES: usize = 64 << 10;

/// WASI preview 1 `errno` values this module returns.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;

/// Takes `fuel` from the attempt's fuel for one call of the fabric's own host functions
/// (telemetry, child tasks), taken or refused: a guest that floods the host with calls
/// burns its own fuel as it would by computing. A call the attempt cannot pay for is not
/// made: it takes the fuel left and ends the attempt `out_of_fuel`.
pub(crate) fn charge(mut store: impl AsContextMut, fuel: u64) -> wasmtime::Result<()> {
    let mut store = store.as_context_mut();
    let left = store.get_fuel()?;
    store.set_fuel(left.saturating_sub(fuel))?;
    if left < fuel {
        return Err(wasmtime::Trap::OutOfFuel.into());
    }
    Ok(())
}

/// The most one host call of an attempt may copy from the guest into the host: the larger
/// of [`MIN_HOSTCALL_BYTES`] and the attempt's output and log limits, so that a guest can
/// always write as much as it may keep in one call, plus [`HOSTCALL_ARGS_BYTES`]. This
/// bounds the host buffers one call takes (a granted file's `fd_read` allocates what it
/// reads before copying it in).
pub(crate) fn hostcall_bytes(output_bytes: u64, log_bytes: u64) -> usize {
    let limit = usize::try_from(output_bytes.max(log_bytes)).unwrap_or(usize::MAX);
    limit
        .max(MIN_HOSTCALL_BYTES)
        .saturating_add(HOSTCALL_ARGS_BYTES)
}

/// Replaces wasmtime-wasi's preview 1 `random_get`, which builds the whole request in a
/// host buffer in one uninterruptible step (a loop of 64 MiB requests overshot a 100 ms
/// timeout fivefold), with one that writes into the guest's memory a slice at a time.
pub(crate) fn shadow_random_get(linker: &mut Linker<P1Guest>) -> wasmtime::Result<()> {
    linker
        .allow_shadowing(true)
        .func_wrap("wasi_snapshot_preview1", "random_get", random_get)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn random_get(mut caller: Caller<'_, P1Guest>, buf: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("random_get: the module exports no memory named `memory`");
    };
    // Pointers and lengths are unsigned 32-bit values passed as i32.
    let start = buf as u32 as usize;
    let Some(end) = start
        .checked_add(len as u32 as usize)
        .filter(|&end| end <= memory.data_size(&caller))
    else {
        return Ok(ERRNO_FAULT);
    };
    let mut rng = rand::rng();
    let mut at = start;
    while at < end {
        caller.data().check_interrupted()?;
        let next = end.min(at + RANDOM_SLICE);
        rng.fill_bytes(&mut memory.data_mut(&mut caller)[at..next]);
        at = next;
    }
    Ok(ERRNO_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_may_copy_what_the_attempt_may_keep_and_never_less_than_the_floor() {
        let args = HOSTCALL_ARGS_BYTES;
        assert_eq!(hostcall_bytes(1 << 20, 64 << 10), MIN_HOSTCALL_BYTES + args);
        assert_eq!(hostcall_bytes(16 << 20, 64 << 10), (16 << 20) + args);
        assert_eq!(hostcall_bytes(0, 32 << 20), (32 << 20) + args);
    }
}
