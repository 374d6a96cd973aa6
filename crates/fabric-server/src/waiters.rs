//! Who waits for which task to end. `task.wait` registers its task here and sleeps until
//! that task's terminal event, so a waiting call costs nothing while other tasks finish.
//! (Each waiter reading every scheduler event itself cost every waiter a wake-up per event:
//! 200 idle waiters took a quarter of a flooded server's throughput.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fabric_store::TaskId;
use tokio::sync::Notify;

/// The registry. One event router feeds it; any number of calls register in it.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: Mutex<HashMap<TaskId, Vec<Arc<Notify>>>>,
}

impl Waiters {
    /// Registers interest in `task`'s end. Register before reading the task, so that an end
    /// committed between the read and the wait still wakes the caller.
    pub(crate) fn register(self: &Arc<Self>, task: &TaskId) -> Registration {
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(task.clone())
            .or_default()
            .push(Arc::clone(&notify));
        Registration {
            waiters: Arc::clone(self),
            task: task.clone(),
            notify,
        }
    }

    /// `task` reached a terminal state: wakes everyone waiting for it.
    pub(crate) fn ended(&self, task: &TaskId) {
        if let Some(waiting) = self.lock().remove(task) {
            waiting.iter().for_each(|notify| notify.notify_one());
        }
    }

    /// Events were missed (the router lagged) or will not come (the scheduler stopped):
    /// wakes every waiter to read its task again.
    pub(crate) fn wake_all(&self) {
        for waiting in self.lock().drain().map(|(_, waiting)| waiting) {
            waiting.iter().for_each(|notify| notify.notify_one());
        }
    }

    /// Tasks someone is waiting for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Vec<Arc<Notify>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One caller's interest in one task; dropping it withdraws the interest.
pub(crate) struct Registration {
    waiters: Arc<Waiters>,
    task: TaskId,
    notify: Arc<Notify>,
}

impl Registration {
    /// Resolves once the task ended (or every waiter was woken) after registration.
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiting = self.waiters.lock();
        if let Some(others) = waiting.get_mut(&self.task) {
            others.retain(|notify| !Arc::ptr_eq(notify, &self.notify));
            if others.is_empty() {
                waiting.remove(&self.task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn id(text: &str) -> TaskId {
        TaskId::from(text)
    }

    #[test]
    fn only_the_end_of_the_awaited_task_wakes_its_waiters() {
        let waiters = Arc::new(Waiters::default());
        let first = waiters.register(&id("a"));
        let second = waiters.register(&id("a"));
        let other = waiters.register(&id("b"));
        waiters.ended(&id("c"));
        assert!(first.woken().now_or_never().is_none());
        waiters.ended(&id("a"));
        assert!(first.woken().now_or_never().is_some());
        assert!(second.woken().now_or_never().is_some());
        assert!(other.woken().now_or_never().is_none());
        assert_eq!(waiters.len(), 1, "only b is still awaited");
    }

    #[test]
    fn an_end_before_the_wait_is_not_lost() {
        let waiters = Arc::new(Waiters::default());
        let registration = waiters.register(&id("a"));
        // The task ends after registration but before the caller starts waiting.
        waiters.ended(&id("a"));
        assert!(registration.woken().now_or_never().is_some());
    }

    #[test]
    fn wake_all_wakes_every_waiter_and_empties_the_registry() {
        let waiters = Arc::new(Waiters::default());
        let registrations: Vec<_> = ["a", "b", "b"]
            .iter()
            .map(|task| waiters.register(&id(task)))
            .collect();
        waiters.wake_all();
        assert_eq!(waiters.len(), 0);
        for registration in &registrations {
            assert!(registration.woken().now_or_never().is_some());
        }
    }

    #[test]
    fn a_dropped_registration_leaves_nothing_behind() {
        let waiters = Arc::new(Waiters::default());
        let first = waiters.register(&id("a"));
        let second = waiters.register(&id("a"));
        drop(first);
        assert_eq!(waiters.len(), 1, "the second still waits");
        drop(second);
        assert_eq!(waiters.len(), 0);
    }
}
