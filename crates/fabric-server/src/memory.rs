//! Hands the allocator's free memory back to the system every few seconds.
//!
//! glibc's `malloc` keeps freed chunks inside its arenas (one per thread, up to eight per
//! core) and returns only what sits at the top of a heap. After a load of short tasks the
//! free space in the middle of the arenas stays resident: after a soak of several million
//! tasks, glibc's `malloc_stats` counted 17.3 MiB in use out of 32.3 MiB held, and one
//! `malloc_trim` called by hand took the server from 53.9 to 46.1 MiB. `malloc_trim`
//! releases the free pages of every arena, taking each arena's lock in turn, so it runs
//! on a blocking thread rather than on an async worker.

use std::time::Duration;

use tokio::sync::watch;

/// How often the free memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Trims every [`TRIM_EVERY`] until the server is gone (`alive`'s sender is dropped).
pub(crate) async fn trim_periodically<T>(mut alive: watch::Receiver<T>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            changed = alive.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        }
        // Off the async workers: the arenas' locks are held while their pages are released.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Returns the free pages of every malloc arena to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn trim() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointers and locks each arena while it works,
    // so it may run at any time on any thread.
    unsafe { malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own terms: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;
    use crate::metrics::read_rss_bytes;

    /// Frees fifteen of every sixteen small blocks of 256 MiB: glibc keeps the holes
    /// resident until a trim hands them back. (Other tests share the process, so the
    /// margin is wide: 128 of the 240 MiB freed.)
    #[test]
    fn trimming_returns_freed_fragments_to_the_system() {
        const BLOCK: usize = 4096;
        let blocks: Vec<Vec<u8>> = (0..(256 << 20) / BLOCK)
            .map(|i| vec![i as u8 | 1; BLOCK])
            .collect();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(16).collect();
        let fragmented = read_rss_bytes().unwrap();
        assert!(trim(), "malloc_trim released nothing");
        let trimmed = read_rss_bytes().unwrap();
        assert!(
            fragmented.saturating_sub(trimmed) >= 128 << 20,
            "RSS went from {fragmented} to {trimmed} bytes"
        );
        assert!(kept.iter().all(|b| b[0] & 1 == 1), "kept blocks intact");
    }
}
