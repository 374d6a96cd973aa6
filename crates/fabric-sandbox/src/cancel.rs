//! A cancellation signal that another task or thread raises and an attempt obeys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Raised once, seen by every clone. A running attempt sees it within one epoch tick when
/// the guest computes, and at once when the guest is parked in a host call.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal; raising it twice is harmless.
    pub fn cancel(&self) {
        self.inner.raised.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.raised.load(Ordering::Acquire)
    }

    /// Resolves once the signal is raised.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
