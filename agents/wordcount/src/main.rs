//! Counts the words, lines and bytes of stdin and prints them with the five most
//! frequent words as one JSON object.
//!
//! Words are whitespace-separated; for `top` each is lowercased and stripped of
//! leading and trailing non-alphanumeric characters. Lines are counted like
//! `str::lines` (a last line without a newline counts). Ties in `top` are broken
//! alphabetically so the output is deterministic. The word count is also recorded as the
//! KPI `words` (a refusal is logged on stderr, the output stays the same).

use serde::Serialize;
use std::collections::HashMap;
use std::io;

/// How many of the most frequent words to report.
const TOP: usize = 5;

#[derive(Debug, Serialize)]
struct Report {
    words: usize,
    lines: usize,
    bytes: usize,
    top: Vec<(String, usize)>,
}

fn count(input: &[u8]) -> Report {
    let text = String::from_utf8_lossy(input);
    let mut words = 0;
    let mut tally: HashMap<String, usize> = HashMap::new();
    for word in text.split_whitespace() {
        words += 1;
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        if !word.is_empty() {
            *tally.entry(word.to_lowercase()).or_default() += 1;
        }
    }
    let mut top: Vec<(String, usize)> = tally.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP);
    Report {
        words,
        lines: text.lines().count(),
        bytes: input.len(),
        top,
    }
}

fn main() -> io::Result<()> {
    let report = count(&fabric_agent::input()?);
    if let Err(refusal) = fabric_agent::kpi("words", report.words as f64) {
        eprintln!("KPI words: {refusal}");
    }
    let json = serde_json::to_string(&report).map_err(io::Error::other)?;
    fabric_agent::output_str(&format!("{json}\n"))
}
