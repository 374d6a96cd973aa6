//! How the client commands show answers to a person: aligned tables, a task's detail,
//! sizes and durations.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fabric_types::wire::{ModuleEntry, Submitted, Task};
use fabric_types::{Attempt, Outcome, format_timestamp};

/// Left-aligned columns two spaces apart, headers first; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[index]);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

const TASK_HEADERS: [&str; 7] = [
    "ID", "STATE", "PRIORITY", "ATTEMPTS", "OUTCOME", "DURATION", "MODULE",
];

/// One row per task: id, state, priority, attempts, last outcome, duration, module.
pub fn tasks_table(tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            vec![
                task.id.clone(),
                task.state.to_string(),
                task.priority.to_string(),
                task.attempts.len().to_string(),
                task.attempts
                    .last()
                    .map_or_else(|| "-".to_owned(), outcome_cell),
                task_duration(task).map_or_else(|| "-".to_owned(), duration_ms),
                short_module(&task.module),
            ]
        })
        .collect();
    table(&TASK_HEADERS, &rows)
}

/// The answer to a submit without --wait.
pub fn submitted_table(submitted: &[Submitted]) -> String {
    let rows: Vec<Vec<String>> = submitted
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.state.to_string(),
                if s.deduplicated { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["ID", "STATE", "DEDUPLICATED"], &rows)
}

pub fn modules_table(modules: &[ModuleEntry]) -> String {
    let rows: Vec<Vec<String>> = modules
        .iter()
        .map(|m| {
            vec![
                m.module.clone(),
                m.kind.to_string(),
                bytes(m.size),
                format_timestamp(m.created_at),
                m.name.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["MODULE", "KIND", "SIZE", "CREATED", "NAME"], &rows)
}

/// Everything about one task: its fields, its attempts, its output and the last
/// attempt's stderr.
pub fn task_detail(task: &Task) -> String {
    let mut fields = vec![
        ("id", task.id.clone()),
        ("module", task.module.clone()),
        ("state", task.state.to_string()),
        ("priority", task.priority.to_string()),
        ("created", format_timestamp(task.created_at)),
    ];
    if let Some(at) = task.started_at {
        fields.push(("started", format_timestamp(at)));
    }
    if let Some(at) = task.finished_at {
        fields.push(("finished", format_timestamp(at)));
    }
    if let Some(duration) = task_duration(task) {
        fields.push(("duration", duration_ms(duration)));
    }
    if !task.labels.is_empty() {
        let labels: Vec<String> = task
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        fields.push(("labels", labels.join(" ")));
    }
    if !task.dirs.is_empty() {
        let dirs: Vec<String> = task
            .dirs
            .iter()
            .map(|(guest, volume)| format!("{guest}={volume}"))
            .collect();
        fields.push(("dirs", dirs.join(" ")));
    }
    if !task.egress.is_empty() {
        fields.push(("egress", task.egress.join(" ")));
    }
    if let Some(error) = &task.error {
        fields.push(("error", error.clone()));
    }
    let mut text = String::new();
    for (name, value) in fields {
        let _ = writeln!(text, "{name:<9} {value}");
    }

    if !task.attempts.is_empty() {
        let rows: Vec<Vec<String>> = task
            .attempts
            .iter()
            .enumerate()
            .map(|(index, attempt)| {
                vec![
                    (index + 1).to_string(),
                    outcome_cell(attempt),
                    attempt.usage.wall_ms.to_string() + "ms",
                    attempt.usage.fuel_consumed.to_string(),
                    bytes(attempt.usage.peak_memory_bytes),
                    attempt
                        .started_at
                        .map_or_else(|| "-".to_owned(), format_timestamp),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&table(
            &[
                "ATTEMPT",
                "OUTCOME",
                "WALL",
                "FUEL",
                "PEAK MEMORY",
                "STARTED",
            ],
            &rows,
        ));
    }

    match (&task.output, &task.output_base64) {
        (Some(output), _) if !output.is_empty() => {
            text.push_str("\noutput:\n");
            text.push_str(output);
            if !output.ends_with('\n') {
                text.push('\n');
            }
        }
        (_, Some(b64)) => {
            let size = BASE64.decode(b64).map_or(0, |b| b.len());
            let _ = write!(
                text,
                "\noutput ({size} bytes, not UTF-8, as base64):\n{b64}\n"
            );
        }
        _ => {}
    }
    if let Some(last) = task.attempts.last().filter(|a| !a.stderr.is_empty()) {
        let stderr = String::from_utf8_lossy(&last.stderr);
        let _ = write!(
            text,
            "\nstderr of attempt {}:\n{stderr}",
            task.attempts.len()
        );
        if !stderr.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

/// `ok`, `exit 3`, `trap (unreachable)`, `timeout`, ...
pub fn outcome_cell(attempt: &Attempt) -> String {
    match (attempt.outcome, attempt.exit_code, &attempt.trap) {
        (Outcome::Exit, Some(code), _) => format!("exit {code}"),
        (Outcome::Trap, _, Some(trap)) => format!("trap ({trap})"),
        (outcome, _, _) => outcome.to_string(),
    }
}

/// From start to finish when both are known, else the last attempt's wall time.
fn task_duration(task: &Task) -> Option<u64> {
    if let (Some(started), Some(finished)) = (task.started_at, task.finished_at) {
        let ms = (finished - started).whole_milliseconds();
        return u64::try_from(ms).ok();
    }
    task.attempts.last().map(|a| a.usage.wall_ms)
}

/// `850ms`, `1.25s`, `2m03s`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// `512 B`, `1.5 KiB`, `16.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `sha256:` and the first 12 hex digits: enough to tell modules apart in a table.
fn short_module(module: &str) -> String {
    const SHOWN: usize = "sha256:".len() + 12;
    match module.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 && hex.is_ascii() => module[..SHOWN].to_owned(),
        _ => module.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::{Priority, TaskState};
    use time::OffsetDateTime;

    fn task(id: &str, attempts: Vec<Attempt>) -> Task {
        Task {
            id: id.into(),
            module: format!("sha256:{}", "ab".repeat(32)),
            state: TaskState::Failed,
            priority: Priority::High,
            created_at: OffsetDateTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            attempts,
            output: None,
            output_base64: None,
            error: None,
            labels: Default::default(),
            dirs: Default::default(),
            egress: Vec::new(),
            args: Vec::new(),
            progress: None,
            after: Vec::new(),
            pass_outputs: false,
            parent: None,
            concurrency: None,
        }
    }

    #[test]
    fn columns_line_up_whatever_the_widths() {
        let text = table(
            &["ID", "STATE", "X"],
            &[
                vec!["1".into(), "queued".into(), "a".into()],
                vec!["12345".into(), "ok".into(), "".into()],
            ],
        );
        assert_eq!(text, "ID     STATE   X\n1      queued  a\n12345  ok\n");
    }

    #[test]
    fn a_task_row_shows_the_last_outcome_and_a_short_module() {
        let mut first = Attempt::new(Outcome::Trap);
        first.trap = Some("unreachable".into());
        let mut last = Attempt::new(Outcome::Exit);
        last.exit_code = Some(3);
        last.usage.wall_ms = 1500;
        let text = tasks_table(&[task("7", vec![first, last])]);
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            cells,
            [
                "7",
                "failed",
                "high",
                "2",
                "exit 3",
                "1.50s",
                "sha256:abababababab"
            ]
        );
    }

    #[test]
    fn the_detail_shows_attempts_output_and_stderr() {
        let mut attempt = Attempt::new(Outcome::Trap);
        attempt.trap = Some("unreachable".into());
        attempt.stderr = b"boom".to_vec();
        let mut t = task("9", vec![attempt]);
        t.output_base64 = Some("//4A".into());
        t.error = Some("the guest trapped".into());
        let text = task_detail(&t);
        assert!(text.contains("state     failed\n"), "{text}");
        assert!(text.contains("error     the guest trapped\n"), "{text}");
        assert!(text.contains("ATTEMPT  OUTCOME"), "{text}");
        assert!(text.contains("trap (unreachable)"), "{text}");
        assert!(
            text.contains("output (3 bytes, not UTF-8, as base64):\n//4A\n"),
            "{text}"
        );
        assert!(text.ends_with("stderr of attempt 1:\nboom\n"), "{text}");

        let mut ok = task("10", Vec::new());
        ok.output = Some("hello".into());
        assert!(task_detail(&ok).ends_with("\noutput:\nhello\n"));
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(16 << 20), "16.0 MiB");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(1250), "1.25s");
        assert_eq!(duration_ms(123_000), "2m03s");
        assert_eq!(short_module("echo"), "echo");
    }
}
