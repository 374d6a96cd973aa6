//! Runs one attempt: a fresh store with its quotas, a WASI context with nothing granted but
//! what the request names, instantiation and the command's entry point raced against the
//! wall-clock deadline and cancellation, then the ending classified into an outcome.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fabric_types::{Attempt, Limits, Outcome, Usage};
use time::OffsetDateTime;
use wasmtime::component::ResourceTableError;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{
    FsPerms, I32Exit, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::CancelToken;
use crate::SpawnObserver;
use crate::cache::{Agent, Linked};
use crate::egress::{EgressGrant, EgressHooks, EgressObserver, Meter};
use crate::engine::FabricEngine;
use crate::hostcalls::{MAX_RANDOM_BYTES, hostcall_bytes};
use crate::limiter::{LimitExceeded, Limiter};
use crate::pipe::CappedOutput;
use crate::tasks::{Child, TaskGrant, Tasks};
use crate::telemetry::{ProgressCell, Telemetry};

/// Fuel injected into the guest at a time. An attempt stopped from outside (timeout,
/// cancel) while in a loop with no calls may be billed up to this much too little; an
/// attempt that finishes or runs out of fuel is billed exactly.
pub const FUEL_SLICE: u64 = 1_000_000;

/// What one attempt gets: its input, its limits and its explicit grants. Every grant is
/// empty by default, so `RunRequest { input, ..RunRequest::default() }` grants nothing.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Fed to the guest on stdin.
    pub input: Vec<u8>,
    pub limits: Limits,
    /// Environment variables granted to this attempt; the host's are never inherited.
    pub env: Vec<(String, String)>,
    /// Host directories granted to this attempt, each read-only; nothing else of the
    /// host's filesystem is visible.
    pub dirs: Vec<DirGrant>,
    /// The egress policies a component may send HTTP requests under; none by default,
    /// and core (p1) modules get no HTTP whatever this says.
    pub egress: EgressGrant,
    /// Command-line arguments after the program name: the guest sees
    /// `["agent", args...]`. Checked by [`fabric_types::check_args`]; arguments over its
    /// bounds make the attempt `invalid`.
    pub args: Vec<String>,
    /// Where the attempt publishes the progress the guest reports, for whoever watches it
    /// run (a fresh cell by default, which nobody watches).
    pub progress: ProgressCell,
    /// The child tasks the guest may submit: none by default (every `submit` is refused).
    pub tasks: Option<TaskGrant>,
}

/// How an attempt ended, and the child tasks its guest submitted that the host accepted,
/// in order (for every outcome: the caller keeps them only for an `ok` attempt).
#[derive(Debug, Clone)]
pub struct RunResult {
    pub attempt: Attempt,
    pub children: Vec<Child>,
}

/// A host directory the guest may read (never write) under a name of its own. The guest
/// sees it as a WASI preopen: `/data/file.txt` in a Rust guest, `path_open` relative to
/// fd 3 (the first grant) in a preview 1 module. Paths are resolved inside the directory
/// only: `..` out of it, absolute paths and symlinks that lead out of it all fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host. It must exist and be a directory when the attempt
    /// starts; otherwise the attempt ends `invalid` with an error naming it.
    pub host: PathBuf,
    /// Its name in the guest, such as `/data`.
    pub guest: String,
}

impl DirGrant {
    /// Grants `host` read-only, seen by the guest as `guest`.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            guest: guest.into(),
        }
    }
}

/// Store data of one attempt: its WASI context, the quotas the engine checks, the
/// telemetry the guest reports and the child tasks it submits.
pub(crate) struct Guest<W> {
    pub wasi: W,
    pub telemetry: Telemetry,
    pub tasks: Tasks,
    limiter: Limiter,
    deadline: Instant,
    cancel: CancelToken,
}

impl<W> Guest<W> {
    /// Whether the attempt must stop now: it was cancelled or its deadline passed. Checked
    /// at every epoch tick and inside long host calls.
    pub(crate) fn check_interrupted(&self) -> wasmtime::Result<()> {
        if self.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(Interrupted::Cancelled));
        }
        if Instant::now() >= self.deadline {
            return Err(wasmtime::Error::new(Interrupted::Timeout));
        }
        Ok(())
    }
}

pub(crate) type P1Guest = Guest<WasiP1Ctx>;
pub(crate) type P2Guest = Guest<P2Wasi>;

/// A WASI preview 2 context, the resource table its handles live in, and its
/// `wasi:http` context with the hooks that hold every request to the attempt's egress.
pub(crate) struct P2Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    egress: EgressHooks,
}

impl WasiView for P2Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for P2Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.egress,
        }
    }
}

/// Why the epoch callback stopped the guest.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Interrupted {
    #[error("the attempt's wall-clock timeout passed")]
    Timeout,
    #[error("the attempt was cancelled")]
    Cancelled,
}

/// Where an attempt was when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Instantiate,
    Run,
}

/// How the race between the guest, the deadline and cancellation ended.
enum Ended {
    /// The guest finished with this exit code.
    Exited(i32),
    Failed(Phase, wasmtime::Error),
    Timeout,
    Cancelled,
}

pub(crate) async fn run(
    engine: &FabricEngine,
    agent: &Agent,
    mut request: RunRequest,
    cancel: &CancelToken,
    on_spawn: Option<&SpawnObserver>,
    on_egress: Option<&EgressObserver>,
) -> RunResult {
    let started = Instant::now();
    let spawned = || {
        if let Some(observe) = on_spawn {
            observe(started.elapsed());
        }
    };
    let started_at = OffsetDateTime::now_utc();
    let limits = request.limits;
    let stdout = CappedOutput::new(limits.output_bytes);
    let stderr = CappedOutput::new(limits.log_bytes);

    let refusal =
        refused_limits(engine, &limits).or_else(|| fabric_types::check_args(&request.args).err());
    let no_children = |attempt: Attempt| -> (Attempt, Vec<Child>) { (attempt, Vec::new()) };
    let (mut attempt, children) = match (&agent.linked, refusal) {
        (Err(link_error), _) => no_children(invalid(link_error.clone())),
        (Ok(_), Some(refusal)) => no_children(invalid(refusal)),
        (Ok(_), None) if cancel.is_cancelled() => no_children(Attempt::new(Outcome::Cancelled)),
        (Ok(linked), None) => match wasi_builder(&request, &stdout, &stderr) {
            Err(refusal) => no_children(invalid(refusal)),
            Ok(mut wasi) => {
                let deadline = started + Duration::from_millis(limits.timeout_ms);
                let handles = engine.config.max_guest_handles as usize;
                let telemetry = Telemetry::new(
                    engine.config.max_telemetry_calls,
                    engine.config.max_kpi_names,
                    request.progress.clone(),
                );
                let tasks = Tasks::new(request.tasks.take());
                match linked {
                    Linked::P1(pre) => {
                        let mut p1 = wasi.build_p1();
                        WasiView::ctx(&mut p1).table.set_max_capacity(handles);
                        let mut store =
                            new_store(engine, p1, telemetry, tasks, &limits, deadline, cancel);
                        let ended = race(deadline, cancel, async {
                            let instance = pre
                                .instantiate_async(&mut store)
                                .await
                                .map_err(in_phase(Phase::Instantiate))?;
                            spawned();
                            let start = instance
                                .get_typed_func::<(), ()>(&mut store, "_start")
                                .map_err(in_phase(Phase::Instantiate))?;
                            start
                                .call_async(&mut store, ())
                                .await
                                .map_err(in_phase(Phase::Run))?;
                            Ok(0)
                        })
                        .await;
                        let attempt = classify(ended, &mut store, &limits);
                        (attempt, store.data_mut().tasks.take_children())
                    }
                    Linked::P2(pre) => {
                        // Only components get HTTP, so only they are metered for it.
                        let meter = Meter::new(on_egress.cloned());
                        let mut table = ResourceTable::new();
                        table.set_max_capacity(handles);
                        let wasi = P2Wasi {
                            ctx: wasi.build(),
                            table,
                            http: WasiHttpCtx::new(),
                            egress: EgressHooks::new(
                                std::mem::take(&mut request.egress),
                                deadline,
                                meter.clone(),
                            ),
                        };
                        let mut store =
                            new_store(engine, wasi, telemetry, tasks, &limits, deadline, cancel);
                        let ended = race(deadline, cancel, async {
                            let command = pre
                                .instantiate_async(&mut store)
                                .await
                                .map_err(in_phase(Phase::Instantiate))?;
                            spawned();
                            let status = command
                                .wasi_cli_run()
                                .call_run(&mut store)
                                .await
                                .map_err(in_phase(Phase::Run))?;
                            Ok(if status.is_ok() { 0 } else { 1 })
                        })
                        .await;
                        let mut attempt = classify(ended, &mut store, &limits);
                        attempt.denials = meter.report(&mut attempt.usage);
                        (attempt, store.data_mut().tasks.take_children())
                    }
                    Linked::TooMuchMemory { memories } => {
                        no_children(too_much_memory(engine, memories, &limits))
                    }
                }
            }
        },
    };

    (attempt.output, attempt.output_truncated) = stdout.take();
    (attempt.stderr, attempt.stderr_truncated) = stderr.take();
    attempt.usage.wall_ms = started.elapsed().as_millis() as u64;
    attempt.started_at = Some(started_at);
    attempt.finished_at = Some(OffsetDateTime::now_utc());
    RunResult { attempt, children }
}

/// How an attempt of a module whose `memories` (initial sizes) do not fit the engine's
/// slots ends: as the limiter ends it when the memories are created in turn, one of them
/// being larger than any attempt's memory limit.
fn too_much_memory(engine: &FabricEngine, memories: &[u64], limits: &Limits) -> Attempt {
    let mut limiter = Limiter::new(limits.memory_bytes, &engine.config);
    for size in memories {
        let size = usize::try_from(*size).unwrap_or(usize::MAX);
        if limiter.memory_growing(0, size, None).is_err() {
            break;
        }
    }
    let mut attempt = Attempt::new(Outcome::MemoryLimit);
    attempt.error = Some(limiter.exceeded.map_or_else(
        || "memory limit: a memory is larger than this sandbox's memories may be".into(),
        |exceeded| exceeded.0,
    ));
    attempt.usage.peak_memory_bytes = limiter.peak_memory;
    attempt
}

/// A reason to refuse the limits before running, if the engine cannot honour them.
fn refused_limits(engine: &FabricEngine, limits: &Limits) -> Option<String> {
    let max = engine.config.max_memory_bytes;
    (limits.memory_bytes > max).then(|| {
        format!(
            "the memory limit of {} bytes is over this sandbox's maximum of {max} bytes",
            limits.memory_bytes
        )
    })
}

fn invalid(error: String) -> Attempt {
    let mut attempt = Attempt::new(Outcome::Invalid);
    attempt.error = Some(error);
    attempt
}

/// A WASI context with nothing from the host but what the request grants: no
/// preopened directories but its read-only grants, no inherited environment or
/// arguments (only `agent` and the request's), no network (every address refused, no name lookup), stdin from the request
/// and capped in-memory stdout and stderr. Clocks and randomness are allowed. A grant
/// that cannot be honoured is a reason to refuse the attempt.
fn wasi_builder(
    request: &RunRequest,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
) -> Result<WasiCtxBuilder, String> {
    let mut wasi = WasiCtxBuilder::new();
    for (i, grant) in request.dirs.iter().enumerate() {
        if request.dirs[..i].iter().any(|g| g.guest == grant.guest) {
            return Err(format!(
                "directory grant {}: the guest path {:?} is granted twice",
                grant.host.display(),
                grant.guest
            ));
        }
        grant_dir(&mut wasi, grant)?;
    }
    wasi.stdin(MemoryInputPipe::new(request.input.clone()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .arg("agent")
        .args(&request.args)
        .envs(&request.env)
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    Ok(wasi)
}

/// Preopens `grant` read-only: directories and files under it can be opened for reading
/// and listed, nothing can be created, written, renamed, removed or have its times set.
fn grant_dir(wasi: &mut WasiCtxBuilder, grant: &DirGrant) -> Result<(), String> {
    let host = grant.host.display();
    if grant.guest.is_empty() || grant.guest.contains('\0') {
        return Err(format!(
            "directory grant {host}: the guest path {:?} must be non-empty and free of NUL",
            grant.guest
        ));
    }
    match std::fs::metadata(&grant.host) {
        Err(e) => return Err(format!("directory grant {host}: {e}")),
        Ok(meta) if !meta.is_dir() => {
            return Err(format!("directory grant {host}: not a directory"));
        }
        Ok(_) => {}
    }
    wasi.preopened_dir(&grant.host, &grant.guest, FsPerms::ReadOnly)
        .map(drop)
        .map_err(|e| format!("directory grant {host}: {e:#}"))
}

fn new_store<W: Send + 'static>(
    engine: &FabricEngine,
    wasi: W,
    telemetry: Telemetry,
    tasks: Tasks,
    limits: &Limits,
    deadline: Instant,
    cancel: &CancelToken,
) -> Store<Guest<W>> {
    let guest = Guest {
        wasi,
        telemetry,
        tasks,
        limiter: Limiter::new(limits.memory_bytes, &engine.config),
        deadline,
        cancel: cancel.clone(),
    };
    let mut store = Store::new(&engine.engine, guest);
    store.limiter(|guest| &mut guest.limiter);
    store
        .set_fuel(limits.fuel)
        .expect("fuel metering is on in every fabric engine");
    // Compiled code keeps its fuel counter in a register and stores it only at calls and
    // when the injected fuel runs out, not at epoch checks. Injecting fuel in slices bounds
    // what an attempt stopped by its deadline or a cancel can go unbilled for.
    store
        .fuel_async_yield_interval(Some(FUEL_SLICE))
        .expect("fuel metering is on in every fabric engine");
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        ctx.data().check_interrupted()?;
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_hostcall_fuel(hostcall_bytes(limits.output_bytes, limits.log_bytes));
    store.set_max_component_handles(engine.config.max_guest_handles as usize);
    store
}

fn in_phase(phase: Phase) -> impl Fn(wasmtime::Error) -> (Phase, wasmtime::Error) {
    move |e| (phase, e)
}

/// Runs `guest` until it finishes, the deadline passes or `cancel` is raised, whichever is
/// first. The deadline also covers a guest parked in a host call (a long `poll_oneoff`),
/// where no epoch check runs: then the guest's future is dropped, which unwinds it.
async fn race(
    deadline: Instant,
    cancel: &CancelToken,
    guest: impl Future<Output = Result<i32, (Phase, wasmtime::Error)>>,
) -> Ended {
    tokio::select! {
        biased;
        result = guest => match result {
            Ok(code) => Ended::Exited(code),
            Err((phase, e)) => Ended::Failed(phase, e),
        },
        () = cancel.cancelled() => Ended::Cancelled,
        () = tokio::time::sleep_until(deadline.into()) => Ended::Timeout,
    }
}

/// The attempt's outcome, usage and KPIs: the KPIs the guest recorded are kept however
/// it ended.
fn classify<W>(ended: Ended, store: &mut Store<Guest<W>>, limits: &Limits) -> Attempt {
    let fuel_left = store.get_fuel().unwrap_or(0);
    let kpis = store.data_mut().telemetry.take_kpis();
    let guest = store.data();
    let mut attempt = match ended {
        Ended::Exited(code) => exited(code),
        Ended::Timeout => Attempt::new(Outcome::Timeout),
        Ended::Cancelled => Attempt::new(Outcome::Cancelled),
        Ended::Failed(phase, error) => failed(phase, &error, guest.limiter.exceeded.as_ref()),
    };
    attempt.usage = Usage {
        fuel_consumed: limits.fuel.saturating_sub(fuel_left),
        peak_memory_bytes: guest.limiter.peak_memory,
        ..Usage::default()
    };
    attempt.kpis = kpis;
    attempt
}

fn exited(code: i32) -> Attempt {
    let mut attempt = Attempt::new(if code == 0 {
        Outcome::Ok
    } else {
        Outcome::Exit
    });
    attempt.exit_code = Some(code);
    attempt
}

fn failed(phase: Phase, error: &wasmtime::Error, exceeded: Option<&LimitExceeded>) -> Attempt {
    if let Some(exceeded) = exceeded {
        let mut attempt = Attempt::new(Outcome::MemoryLimit);
        attempt.error = Some(exceeded.0.clone());
        return attempt;
    }
    if let Some(interrupted) = error.downcast_ref::<Interrupted>() {
        return Attempt::new(match interrupted {
            Interrupted::Timeout => Outcome::Timeout,
            Interrupted::Cancelled => Outcome::Cancelled,
        });
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return exited(exit.0);
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        let mut attempt = Attempt::new(Outcome::MemoryLimit);
        attempt.error = Some(
            "handle limit: the guest holds as many host handles (open files, streams, \
             pollables) as the sandbox allows"
                .into(),
        );
        return attempt;
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Attempt::new(Outcome::OutOfFuel),
            Trap::Interrupt => Attempt::new(Outcome::Timeout),
            trap => {
                let mut attempt = Attempt::new(Outcome::Trap);
                attempt.trap = Some(trap_kind(*trap));
                attempt.error = Some(format!("{error:#}"));
                attempt
            }
        };
    }
    let mut attempt = match phase {
        Phase::Instantiate => Attempt::new(Outcome::Invalid),
        Phase::Run => {
            let mut attempt = Attempt::new(Outcome::Trap);
            attempt.trap = Some("host_error".into());
            attempt
        }
    };
    attempt.error = Some(format!("{error:#}"));
    attempt
}

/// The trap's name in snake case: `stack_overflow`, `unreachable`, ...
fn trap_kind(trap: Trap) -> String {
    match trap {
        Trap::UnreachableCodeReached => "unreachable".into(),
        Trap::IntegerDivisionByZero => "integer_divide_by_zero".into(),
        other => {
            let name = format!("{other:?}");
            let mut kind = String::with_capacity(name.len() + 4);
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    kind.push('_');
                }
                kind.push(c.to_ascii_lowercase());
            }
            kind
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_kinds_are_snake_case() {
        assert_eq!(trap_kind(Trap::StackOverflow), "stack_overflow");
        assert_eq!(trap_kind(Trap::UnreachableCodeReached), "unreachable");
        assert_eq!(trap_kind(Trap::MemoryOutOfBounds), "memory_out_of_bounds");
        assert_eq!(
            trap_kind(Trap::IntegerDivisionByZero),
            "integer_divide_by_zero"
        );
    }
}
