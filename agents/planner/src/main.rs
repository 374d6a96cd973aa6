//! A planner: fans its input out to child tasks and joins their results, through the
//! `fabric-agent` SDK's `submit`.
//!
//! Without arguments it reads lines of text on stdin and submits, for each non-empty
//! line, a child task running the module `wordcount` with that line as its input; then a
//! fan-in child running the module `planner` (this agent) with the argument `--join`,
//! `after` every child and `pass_outputs: true`. It prints
//! `{"children":["ID",...],"join":"ID"}`. The children exist only if this attempt ends
//! `ok`. A refused submit is printed on stderr and ends the planner with exit code 1.
//!
//! Arguments (after the program name):
//!
//! - `--join` joins instead: it reads the document the fabric passes a task with
//!   `pass_outputs`, `{"input": "...", "after": [{"id", "state", "output"}, ...]}`, whose
//!   outputs are wordcount reports, and prints their totals
//!   `{"texts":N,"words":W,"lines":L,"bytes":B}`.
//! - `--fail-after-submit` submits as without it, prints the ids, then exits with code 1:
//!   none of its children may ever exist.
//! - `--sleep-after-submit MS` submits as without it, then sleeps MS milliseconds before
//!   printing the ids (a window in which its node can die).
//! - `--flood N` instead submits N children (`wordcount` of `flood I`) and prints
//!   `flood calls=N taken=T refused=R` and, when one was refused, `last refusal: ...`.
//! - `--raw` instead submits each non-empty line of stdin as a spec, as it is, and prints
//!   `ok ID` or `refused: WHY` for each.
//! - `--child MODULE` and `--joiner MODULE` name other modules for the children and the
//!   fan-in child (`wordcount` and `planner` by default).

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::json;

fn main() -> ExitCode {
    let args = fabric_agent::args();
    match run(&args) {
        Ok(code) => code,
        Err(why) => {
            eprintln!("planner: {why}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let value = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .map(|at| {
                args.get(at + 1)
                    .cloned()
                    .ok_or_else(|| format!("{name} takes a value"))
            })
            .transpose()
    };
    let input = fabric_agent::input_string().map_err(|e| format!("reading stdin: {e}"))?;
    if flag("--join") {
        let totals = join(&input)?;
        return print(&serde_json::to_string(&totals).map_err(|e| e.to_string())?);
    }
    if flag("--raw") {
        return print(raw(&input).trim_end());
    }
    let child = value("--child")?.unwrap_or_else(|| "wordcount".into());
    if let Some(calls) = value("--flood")? {
        let calls = calls
            .parse::<u64>()
            .map_err(|_| "--flood takes a number of calls".to_string())?;
        return print(flood(&child, calls).trim_end());
    }
    let joiner = value("--joiner")?.unwrap_or_else(|| "planner".into());
    let plan = plan(&input, &child, &joiner)?;
    if let Some(ms) = value("--sleep-after-submit")? {
        let ms = ms
            .parse::<u64>()
            .map_err(|_| "--sleep-after-submit takes milliseconds".to_string())?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    print(&plan.to_string())?;
    if flag("--fail-after-submit") {
        eprintln!("planner: failing after submitting, as asked (--fail-after-submit)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print(line: &str) -> Result<ExitCode, String> {
    fabric_agent::output_str(&format!("{line}\n")).map_err(|e| format!("writing stdout: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Submits one `child` per non-empty line of `input`, then the fan-in `joiner` after all
/// of them; returns `{"children": [...], "join": ID}`.
fn plan(input: &str, child: &str, joiner: &str) -> Result<serde_json::Value, String> {
    let mut children = Vec::new();
    for (i, line) in input
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
    {
        let spec = json!({"module": child, "input": line});
        children.push(submit(&spec).map_err(|why| format!("submitting child {i}: {why}"))?);
    }
    let fan_in = json!({
        "module": joiner,
        "args": ["--join"],
        "after": children,
        "pass_outputs": true,
    });
    let join = submit(&fan_in).map_err(|why| format!("submitting the fan-in child: {why}"))?;
    Ok(json!({"children": children, "join": join}))
}

fn submit(spec: &serde_json::Value) -> Result<String, fabric_agent::Refused> {
    submit_text(&spec.to_string())
}

#[cfg(all(target_arch = "wasm32", any(target_env = "p1", target_env = "p2")))]
fn submit_text(spec: &str) -> Result<String, fabric_agent::Refused> {
    fabric_agent::submit(spec)
}

/// Off the wasm targets there is no host to submit to: every submit is refused, as
/// without a grant.
#[cfg(not(all(target_arch = "wasm32", any(target_env = "p1", target_env = "p2"))))]
fn submit_text(_spec: &str) -> Result<String, fabric_agent::Refused> {
    Err(fabric_agent::Refused::Message(
        "no fabric host: built for another target".into(),
    ))
}

/// Submits each non-empty line of `input` as it is; one answer per line.
fn raw(input: &str) -> String {
    let mut report = String::new();
    for line in input.lines().filter(|line| !line.is_empty()) {
        match submit_text(line) {
            Ok(id) => report.push_str(&format!("ok {id}\n")),
            Err(refusal) => report.push_str(&format!("refused: {refusal}\n")),
        }
    }
    report
}

/// Makes `calls` submit calls and says how many the host took.
fn flood(child: &str, calls: u64) -> String {
    let mut refused = 0;
    let mut last = None;
    for i in 0..calls {
        if let Err(refusal) = submit(&json!({"module": child, "input": format!("flood {i}")})) {
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

/// The document a task with `pass_outputs` reads.
#[derive(Debug, Deserialize)]
struct Joined {
    #[serde(default)]
    after: Vec<Dependency>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    id: String,
    state: String,
    output: Option<String>,
}

/// What wordcount reports (its `top` is left out).
#[derive(Debug, Deserialize)]
struct Count {
    words: u64,
    lines: u64,
    bytes: u64,
}

#[derive(Debug, Default, PartialEq, Serialize)]
struct Totals {
    texts: u64,
    words: u64,
    lines: u64,
    bytes: u64,
}

/// The totals of the wordcount reports in the `after` of `document`.
fn join(document: &str) -> Result<Totals, String> {
    let joined: Joined = serde_json::from_str(document)
        .map_err(|e| format!("the input is not a pass_outputs document: {e}"))?;
    let mut totals = Totals::default();
    for dependency in joined.after {
        let id = &dependency.id;
        if dependency.state != "succeeded" {
            return Err(format!("dependency {id} is {}", dependency.state));
        }
        let output = dependency
            .output
            .ok_or_else(|| format!("dependency {id} has no text output"))?;
        let count: Count = serde_json::from_str(&output)
            .map_err(|e| format!("dependency {id}: not a wordcount report: {e}"))?;
        totals.texts += 1;
        totals.words += count.words;
        totals.lines += count.lines;
        totals.bytes += count.bytes;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_sums_the_reports_in_order() {
        let document = r#"{"input":"","after":[
            {"id":"A","state":"succeeded","output":"{\"words\":2,\"lines\":1,\"bytes\":9,\"top\":[]}\n"},
            {"id":"B","state":"succeeded","output":"{\"words\":5,\"lines\":1,\"bytes\":20,\"top\":[[\"a\",5]]}"}]}"#;
        assert_eq!(
            join(document),
            Ok(Totals {
                texts: 2,
                words: 7,
                lines: 2,
                bytes: 29
            })
        );
        assert_eq!(join(r#"{"input":"x","after":[]}"#), Ok(Totals::default()));
    }

    #[test]
    fn join_refuses_what_is_not_a_succeeded_report() {
        let not_text = r#"{"after":[{"id":"A","state":"succeeded","output_base64":"/w=="}]}"#;
        assert_eq!(
            join(not_text),
            Err("dependency A has no text output".into())
        );
        let failed = r#"{"after":[{"id":"B","state":"failed","output":""}]}"#;
        assert_eq!(join(failed), Err("dependency B is failed".into()));
        assert!(
            join("plain text")
                .unwrap_err()
                .contains("not a pass_outputs document")
        );
    }
}
