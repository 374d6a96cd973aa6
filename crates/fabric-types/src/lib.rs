//! The vocabulary every fabric crate shares: ids, priorities, task states, limits, retry
//! policies, attempt outcomes and resource usage.

mod args;
mod concurrency;
mod id;
mod limits;
pub mod millis;
mod outcome;
mod report;
mod schedule;
mod size;
mod task;
mod telemetry;
pub mod wire;
pub mod workflow;

pub use args::{MAX_ARGS, MAX_ARGS_BYTES, check_args};
pub use concurrency::{Concurrency, MAX_CONCURRENCY_KEY_BYTES, MAX_CONCURRENCY_LIMIT};
pub use id::{ModuleId, ModuleKind, ParseModuleIdError};
pub use limits::{Limits, RetryPolicy};
pub use outcome::{
    Attempt, Denial, Outcome, ParseOutcomeError, Usage, format_timestamp, text_or_base64,
};
pub use size::{ParseSizeError, parse_duration, parse_size};
pub use task::{ParsePriorityError, ParseTaskStateError, Priority, TaskState};
pub use telemetry::{
    KpiStats, Kpis, MAX_KPI_NAME_BYTES, MAX_PROGRESS_MESSAGE_BYTES, Progress, TelemetryRefusal,
    check_kpi, check_progress, is_kpi_name,
};
