//! `fabric demo`, the README's first command, run to its summary.

use crate::util::{Workdir, fabric, stderr};

/// The median submit->finish milliseconds of a priority's row in the summary.
fn median_ms(stdout: &str, priority: &str) -> f64 {
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&format!("{priority} ")))
        .unwrap_or_else(|| panic!("no {priority} row in:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], cells[2], "every {priority} task succeeded: {row}");
    cells[3].parse().unwrap()
}

#[test]
fn the_demo_shows_priorities_a_retry_a_timeout_isolation_and_egress() {
    let dir = Workdir::new();
    let data = dir.file("unused", b"");
    let data_dir = data.with_file_name("data");
    let output = fabric(&[
        "demo",
        "--once",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", stderr(&output));
    assert!(
        median_ms(&stdout, "critical") < median_ms(&stdout, "low"),
        "critical work queued last finishes first:\n{stdout}"
    );
    for expected in [
        "attempts: exit 3, exit 3, exit 3",
        "failed  high      1         timeout",
        "read /etc/passwd -> err",
        "env -> ok: 0 vars",
        "connect 127.0.0.1:7070 -> err",
        "\"words\":13",
        "/weather -> 200, 43 bytes: {\"city\":\"Lisbon\",\"sky\":\"clear\",\"temp_c\":21}",
        "GET http://169.254.169.254/latest/meta-data/ -> err: HttpRequestDenied",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        data_dir.join("fabric.db").exists(),
        "the embedded store is on disk"
    );
}
