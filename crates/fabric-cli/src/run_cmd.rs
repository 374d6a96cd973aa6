//! `fabric run`: one attempt in-process, no server, no store.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;

use fabric_sandbox::{
    CancelToken, DirGrant, EgressGrant, EgressPolicy, ProgressCell, RunRequest, Sandbox,
    SandboxConfig,
};
use fabric_types::{Attempt, Outcome};

use crate::EXIT_USAGE;
use crate::args::{InputArgs, RunArgs};

pub fn main(args: RunArgs) -> ExitCode {
    let prepared = read_module(&args.module).and_then(|wasm| Ok((wasm, read_input(&args.input)?)));
    let (wasm, input) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = check_grants(&args.dirs) {
        return usage_error(&e);
    }
    if let Err(why) = fabric_types::check_args(&args.args) {
        return usage_error(&anyhow::anyhow!("the agent's arguments: {why}"));
    }
    let limits = args.limits.to_limits();
    let config = SandboxConfig {
        slots: 1,
        max_memory_bytes: limits
            .memory_bytes
            .clamp(1, SandboxConfig::DEFAULT_MAX_MEMORY_BYTES),
        ..SandboxConfig::default()
    };
    let sandbox = match Sandbox::new(config) {
        Ok(sandbox) => sandbox,
        Err(e) => return usage_error(&anyhow::Error::new(e)),
    };
    let agent = match sandbox.load(&wasm) {
        Ok(agent) => agent,
        Err(e) => {
            return usage_error(&anyhow::anyhow!(
                "cannot load {}: {e}",
                args.module.display()
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a single-threaded tokio runtime");
    let egress = match egress(&args) {
        Ok(egress) => egress,
        Err(e) => return usage_error(&e),
    };
    let progress = ProgressCell::new();
    let request = RunRequest {
        input,
        limits,
        env: args.env,
        dirs: args.dirs,
        egress,
        args: args.args,
        progress: progress.clone(),
        // No store to create them in: every child task the agent submits is refused.
        tasks: None,
    };
    let cancel = CancelToken::new();
    let attempt = runtime.block_on(async {
        let run = sandbox.run(&agent, request, &cancel);
        if args.json {
            return run.await;
        }
        // Progress goes to stderr as the agent reports it (at most every PROGRESS_EVERY).
        tokio::pin!(run);
        let mut seen = 0;
        let mut print_new = || {
            if let Some((counter, now)) = progress.changed_since(seen) {
                seen = counter;
                eprintln!("fabric: progress {:.0}% {}", now.done * 100.0, now.message);
            }
        };
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let attempt = loop {
            tokio::select! {
                attempt = &mut run => break attempt,
                _ = tick.tick() => print_new(),
            }
        };
        // The last report too, when the agent ended before the next tick.
        print_new();
        attempt
    });

    if args.json {
        let json = serde_json::to_string(&attempt).expect("an attempt always serializes");
        println!("{json}");
    } else {
        print_human(&attempt);
    }
    if attempt.outcome == Outcome::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How often `fabric run` looks for new progress to print.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The `--allow` rules as one policy, `run`: the default bounds, no headers, private
/// addresses only with `--allow-private`. Idempotency keys are seeded with the time, as a
/// run is never retried.
fn egress(args: &RunArgs) -> anyhow::Result<EgressGrant> {
    if args.allow.is_empty() {
        return Ok(EgressGrant::default());
    }
    let mut policy = EgressPolicy::new("run", &args.allow).map_err(anyhow::Error::msg)?;
    policy.private = args.allow_private;
    Ok(EgressGrant {
        policies: vec![Arc::new(policy)],
        key_seed: format!(
            "run-{}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        ),
        calls: None,
    })
}

/// Refuses a granted directory that holds a FIFO, socket or device (see
/// `fabric_sandbox::scan_grant`). A missing directory is left to the sandbox, which ends
/// the attempt `invalid` naming it.
fn check_grants(dirs: &[DirGrant]) -> anyhow::Result<()> {
    for grant in dirs.iter().filter(|grant| grant.host.is_dir()) {
        fabric_sandbox::scan_grant(&grant.host)
            .with_context(|| format!("cannot grant --dir {}", grant.host.display()))?;
    }
    Ok(())
}

/// Where a `--dir` grant appears in the guest when the argument names no GUEST.
pub const DEFAULT_GUEST_DIR: &str = "/data";

/// Parses `--dir HOST[:GUEST]`: the text after the last `:` is GUEST when there is a `:`,
/// and it must be an absolute guest path; without a `:` the grant is seen as `/data`.
pub fn parse_dir_grant(text: &str) -> Result<DirGrant, String> {
    let (host, guest) = match text.rsplit_once(':') {
        None => (text, DEFAULT_GUEST_DIR),
        Some((host, guest)) if guest.starts_with('/') => (host, guest),
        Some(_) => {
            return Err(format!(
                "expected HOST[:GUEST] with GUEST an absolute path such as /data, got {text:?}"
            ));
        }
    };
    if host.is_empty() {
        return Err(format!("the HOST directory is missing in {text:?}"));
    }
    Ok(DirGrant::read_only(host, guest))
}

fn usage_error(error: &anyhow::Error) -> ExitCode {
    eprintln!("fabric: {error:#}");
    ExitCode::from(EXIT_USAGE)
}

/// The module's bytes; `.wat` files are compiled from text first.
pub(crate) fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))?;
    if path.extension().is_some_and(|ext| ext == "wat") {
        return wat::parse_bytes(&bytes)
            .map(|wasm| wasm.into_owned())
            .with_context(|| format!("cannot parse WebAssembly text {}", path.display()));
    }
    Ok(bytes)
}

/// The input named by --input or --input-file (`-` for stdin); empty when neither.
pub(crate) fn read_input(args: &InputArgs) -> anyhow::Result<Vec<u8>> {
    match (&args.input, &args.input_file) {
        (Some(text), _) => Ok(text.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("cannot read the input from stdin")?;
            Ok(input)
        }
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("cannot read input file {}", path.display())),
        (None, None) => Ok(Vec::new()),
    }
}

/// The guest's stdout on stdout, its stderr on stderr, then one summary line on stderr.
fn print_human(attempt: &Attempt) {
    let _ = std::io::stdout().write_all(&attempt.output);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&attempt.stderr);
    let mut summary = format!("fabric: {}", attempt.outcome);
    if let Some(code) = attempt.exit_code.filter(|_| attempt.outcome != Outcome::Ok) {
        summary += &format!(" (exit code {code})");
    }
    if let Some(trap) = &attempt.trap {
        summary += &format!(" ({trap})");
    }
    let usage = attempt.usage;
    summary += &format!(
        " · {} ms · fuel {} · peak memory {} KiB",
        usage.wall_ms,
        usage.fuel_consumed,
        usage.peak_memory_bytes / 1024
    );
    if usage.http_requests + usage.http_denied > 0 {
        summary += &format!(
            " · http {} sent ({} B out, {} B in), {} denied",
            usage.http_requests,
            usage.http_bytes_sent,
            usage.http_bytes_received,
            usage.http_denied
        );
    }
    for (truncated, what) in [
        (attempt.output_truncated, "stdout"),
        (attempt.stderr_truncated, "stderr"),
    ] {
        if truncated {
            summary += &format!(" · {what} truncated at its limit");
        }
    }
    if let Some(error) = &attempt.error {
        summary += &format!("\nfabric: {error}");
    }
    for denial in &attempt.denials {
        summary += &format!("\nfabric: denied {}: {}", denial.url, denial.reason);
    }
    for (name, kpi) in &attempt.kpis {
        summary += &format!(
            "\nfabric: kpi {name}: count {} · mean {} · min {} · max {} · last {}",
            kpi.count,
            kpi.sum / kpi.count as f64,
            kpi.min,
            kpi.max,
            kpi.last
        );
    }
    eprintln!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_without_guest_is_seen_as_data() {
        assert_eq!(
            parse_dir_grant("./inputs").unwrap(),
            DirGrant::read_only("./inputs", "/data")
        );
    }

    #[test]
    fn a_dir_with_guest_is_split_at_the_last_colon() {
        assert_eq!(
            parse_dir_grant("/srv/in:/input").unwrap(),
            DirGrant::read_only("/srv/in", "/input")
        );
        assert_eq!(
            parse_dir_grant("odd:name:/input").unwrap(),
            DirGrant::read_only("odd:name", "/input")
        );
    }

    #[test]
    fn a_relative_guest_or_a_missing_host_is_refused() {
        assert!(
            parse_dir_grant("odd:name")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(parse_dir_grant(":/data").unwrap_err().contains("HOST"));
    }

    #[test]
    fn dir_is_repeatable_on_the_command_line() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from([
            "fabric", "run", "a.wasm", "--dir", "a", "--dir", "b:/b",
        ])
        .unwrap();
        let crate::args::Command::Run(args) = cli.command else {
            panic!("not a run command");
        };
        assert_eq!(
            args.dirs,
            [
                DirGrant::read_only("a", "/data"),
                DirGrant::read_only("b", "/b")
            ]
        );
    }
}
