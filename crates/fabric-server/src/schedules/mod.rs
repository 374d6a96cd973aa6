//! Cron schedules: `schedule.put|get|list|delete`, and the loop on every node that fires
//! each due tick once, whichever nodes are up.
//!
//! A firing creates a task from the schedule's `TaskSpec` with the label
//! `schedule=<name>` and the idempotency key `schedule:<name>:<tick>` (the tick in RFC 3339,
//! UTC, whole seconds): nodes that fire the same tick at once insert one task, and the
//! store's compare-and-set on the schedule's `next_run_at` lets one of them move it on.
//! After downtime only the latest missed tick fires.

pub mod cron;
mod fire;
mod methods;
mod service;

use fabric_store::{ScheduleRecord, from_millis, to_millis};
use fabric_types::wire::{Schedule, TaskSpec};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use time::OffsetDateTime;

use crate::rpc::RpcError;

pub use fire::FiringCounts;
pub(crate) use methods::{schedule_delete, schedule_get, schedule_list, schedule_put};
pub(crate) use service::run as run_firing_loop;

/// The most schedules one tenant may have.
pub const MAX_SCHEDULES_PER_TENANT: usize = 1_000;
/// The longest schedule name, in bytes.
pub const MAX_SCHEDULE_NAME_BYTES: usize = 64;
/// The label every task a schedule creates carries, with the schedule's name.
pub const SCHEDULE_LABEL: &str = "schedule";
/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A schedule name is 1 to [`MAX_SCHEDULE_NAME_BYTES`] bytes of ASCII letters, digits,
/// `_`, `-` and `.` (it goes into a label and an idempotency key).
pub fn check_name(name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(
            "name",
            format!(
                "must be 1 to {MAX_SCHEDULE_NAME_BYTES} characters of letters, digits, _, - and ."
            ),
        ))
    }
}

/// The time zone named `name` (an IANA name such as `Europe/Paris`, or `UTC`).
pub fn time_zone(name: &str) -> Result<TimeZone, RpcError> {
    TimeZone::get(name).map_err(|err| {
        RpcError::invalid_params(
            "timezone",
            format!("{name:?} is not an IANA time zone: {err}"),
        )
    })
}

/// The idempotency key of the firing of `name` at `tick`.
pub fn tick_key(name: &str, tick: OffsetDateTime) -> String {
    format!("schedule:{name}:{}", to_timestamp(tick))
}

pub(crate) fn to_timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp::from_millisecond(to_millis(at)).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn from_timestamp(at: Timestamp) -> OffsetDateTime {
    from_millis(at.as_millisecond())
}

/// A stored schedule as the API shows it.
pub(crate) fn view(record: ScheduleRecord) -> Result<Schedule, RpcError> {
    let task: TaskSpec = serde_json::from_str(&record.task).map_err(|err| {
        RpcError::internal(format!(
            "schedule {:?} holds a task that cannot be read: {err}",
            record.name
        ))
    })?;
    Ok(Schedule {
        name: record.name,
        cron: record.cron,
        task,
        timezone: record.timezone,
        next_run_at: record.next_run_at,
        last_task: record.last_task.map(|id| id.into_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("nightly-report_v2.1").is_ok());
        assert!(check_name(&"n".repeat(64)).is_ok());
        for bad in ["", "has space", "a:b", "ünï", &"n".repeat(65)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.message.contains("name"), "{bad:?}: {}", err.message);
        }
    }

    #[test]
    fn tick_keys_name_the_tick_in_utc() {
        let tick = from_millis(1_780_000_000_000);
        assert_eq!(
            tick_key("nightly", tick),
            "schedule:nightly:2026-05-28T20:26:40Z"
        );
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!(time_zone("Europe/Paris").is_ok());
        assert!(time_zone("UTC").is_ok());
        let err = time_zone("Mars/Olympus").unwrap_err();
        assert!(err.message.contains("timezone"), "{}", err.message);
    }
}
