//! The progress reporter: every `progress_every`, takes the progress each running attempt
//! reported since the last round (only the latest counts), records it in the store fenced
//! by the attempt, and announces it to subscribers; when an attempt ends, what it reported
//! after the last round is written before its completion. However often a guest reports,
//! the store sees at most one write per attempt per period, plus that last one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fabric_store::{AttemptId, ProgressUpdate, TaskProgressParams};
use fabric_types::TaskState;

use crate::service::every;
use crate::{Running, Shared, TaskEvent};

pub(crate) async fn run(shared: Arc<Shared>) {
    every(&shared, shared.config.progress_every, || async {
        let changed: Vec<_> = {
            let running = shared.running.lock().expect("running lock");
            running
                .iter()
                .filter_map(|(id, attempt)| {
                    let seen = attempt.progress_seen.load(Ordering::Acquire);
                    let (counter, progress) = attempt.progress.changed_since(seen)?;
                    Some((id.clone(), attempt.clone(), counter, progress))
                })
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        let params = TaskProgressParams {
            updates: changed
                .iter()
                .map(|(id, _, _, progress)| ProgressUpdate {
                    attempt_id: id.clone(),
                    progress: progress.clone(),
                })
                .collect(),
        };
        if let Err(e) = shared.store.task_progress(params).await {
            // Left unseen, so the next round writes it (or whatever came after it).
            tracing::warn!(error = %e, "recording progress failed");
            return;
        }
        for (_, attempt, counter, progress) in changed {
            attempt.progress_seen.store(counter, Ordering::Release);
            announce(&shared, &attempt, progress);
        }
    })
    .await;
}

/// Writes the progress `attempt` reported since the last round, if any, while it still
/// holds its task (just before its completion is queued), so that a short attempt's last
/// report is kept too. Best effort: a store error only loses that report.
pub(crate) async fn flush(shared: &Shared, attempt_id: &AttemptId, attempt: &Running) {
    let seen = attempt.progress_seen.load(Ordering::Acquire);
    let Some((counter, progress)) = attempt.progress.changed_since(seen) else {
        return;
    };
    let params = TaskProgressParams {
        updates: vec![ProgressUpdate {
            attempt_id: attempt_id.clone(),
            progress: progress.clone(),
        }],
    };
    match shared.store.task_progress(params).await {
        Ok(_) => {
            attempt.progress_seen.store(counter, Ordering::Release);
            announce(shared, attempt, progress);
        }
        Err(e) => tracing::warn!(error = %e, "recording an attempt's last progress failed"),
    }
}

fn announce(shared: &Shared, attempt: &Running, progress: fabric_types::Progress) {
    let _ = shared.events.send(TaskEvent {
        task_id: attempt.task_id.clone(),
        tenant: attempt.tenant.clone(),
        state: TaskState::Running,
        attempt: None,
        progress: Some(Arc::new(progress)),
    });
}
