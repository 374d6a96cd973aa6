//! The firing loop every node runs: it sleeps until the earliest schedule is due (or at
//! most [`POLL`], to see schedules other nodes stored), then fires every due schedule.
//! Nodes firing the same tick at once make one task (see the module notes); a node that is
//! down fires nothing, and the others fire for it.

use std::sync::Arc;
use std::time::Duration;

use fabric_store::ScheduleDueParams;
use time::OffsetDateTime;

use super::fire;
use crate::server::App;

/// The longest sleep between two looks at the store.
pub const POLL: Duration = Duration::from_secs(1);
/// The pause before trying again after the store failed or a firing could not finish.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The most schedules fired per look; more due ones are fired on the next, at once.
const BATCH: usize = 100;

/// Runs until the server drains.
pub(crate) async fn run(app: Arc<App>) {
    let mut phase = app.phase();
    loop {
        if app.is_draining() {
            return;
        }
        let pause = match look(&app).await {
            Ok(pause) => pause,
            Err(why) => {
                tracing::warn!(%why, "the schedule loop will try again");
                RETRY_PAUSE
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = phase.changed() => {}
        }
    }
}

/// Fires what is due; how long to sleep before the next look.
async fn look(app: &App) -> Result<Duration, String> {
    let now = OffsetDateTime::now_utc();
    let due = app
        .store
        .schedule_due(ScheduleDueParams { now, max: BATCH })
        .await
        .map_err(|e| format!("find due schedules: {e}"))?;
    let mut failed = None;
    for schedule in &due {
        if let Err(fire::Transient(why)) = fire::fire(app, schedule, now).await {
            failed = Some(why);
        }
    }
    if let Some(why) = failed {
        return Err(why);
    }
    if due.len() == BATCH {
        return Ok(Duration::ZERO);
    }
    let next = app
        .store
        .schedule_next_due()
        .await
        .map_err(|e| format!("find the next due schedule: {e}"))?;
    let Some(next) = next else {
        return Ok(POLL);
    };
    // A millisecond past the tick, so the next look finds it due.
    let wait = next - OffsetDateTime::now_utc() + time::Duration::milliseconds(1);
    Ok(Duration::try_from(wait).unwrap_or(Duration::ZERO).min(POLL))
}
