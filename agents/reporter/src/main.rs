//! Summarizes its input text while reporting to the host through the `fabric-agent` SDK.
//!
//! Per line `i` of `n` it reports progress `(i / n, "line i of n")` and records the KPI
//! `words` (that line's word count); then it records `lines` (n) and `confidence` (the
//! share of words made of letters only, 1 when there are none), and prints
//! `lines=N words=W confidence=C`. Refused calls are counted and printed as `refused=R`.
//!
//! Arguments (after the program name):
//!
//! - `--print-args` first prints `args=[...]`: the arguments it got, as Rust debug text.
//! - `--flood N` instead makes N calls `kpi("flood", i)` and prints
//!   `flood calls=N taken=T refused=R` and, when one was refused, `last refusal: ...`.

use std::io;

fn main() -> io::Result<()> {
    let args = fabric_agent::args();
    let mut out = String::new();
    if args.iter().any(|arg| arg == "--print-args") {
        out.push_str(&format!("args={args:?}\n"));
    }
    match args.iter().position(|arg| arg == "--flood") {
        Some(at) => {
            let calls = args
                .get(at + 1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other("--flood takes a number of calls"))?;
            out.push_str(&flood(calls));
        }
        None => out.push_str(&summarize(&fabric_agent::input_string()?)),
    }
    fabric_agent::output_str(&out)
}

/// Makes `calls` KPI calls and says how many the host took.
fn flood(calls: u64) -> String {
    let mut refused = 0;
    let mut last = None;
    for i in 0..calls {
        if let Err(refusal) = fabric_agent::kpi("flood", i as f64) {
            refused += 1;
            last = Some(refusal);
        }
    }
    let mut report = format!(
        "flood calls={calls} taken={} refused={refused}\n",
        calls - refused
    );
    if let Some(refusal) = last {
        report.push_str(&format!("last refusal: {refusal}\n"));
    }
    report
}

/// Reports progress per line and the KPIs of `text`, and returns the summary.
fn summarize(text: &str) -> String {
    let mut refused = 0;
    let mut count = |result: Result<(), fabric_agent::Refused>| {
        if let Err(refusal) = result {
            eprintln!("{refusal}");
            refused += 1;
        }
    };
    let n = text.lines().count();
    let (mut words, mut lettered) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let line_words: Vec<&str> = line.split_whitespace().collect();
        words += line_words.len();
        lettered += line_words
            .iter()
            .filter(|word| word.chars().all(char::is_alphabetic))
            .count();
        count(fabric_agent::kpi("words", line_words.len() as f64));
        let i = i + 1;
        count(fabric_agent::progress(
            i as f64 / n as f64,
            &format!("line {i} of {n}"),
        ));
    }
    let confidence = if words == 0 {
        1.0
    } else {
        lettered as f64 / words as f64
    };
    count(fabric_agent::kpi("lines", n as f64));
    count(fabric_agent::kpi("confidence", confidence));
    format!("lines={n} words={words} confidence={confidence} refused={refused}\n")
}
