//! Shared helpers: one sandbox for the whole test binary, and shorthands to run a guest.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fabric_sandbox::{
    Agent, CancelToken, Child, ChildTasks, RunRequest, RunResult, Sandbox, SandboxConfig, TaskGrant,
};
use fabric_types::wire::TaskSpec;
use fabric_types::{Attempt, Limits, Outcome};

/// The epoch tick the shared sandbox uses.
pub const TICK: Duration = Duration::from_millis(10);

/// One sandbox shared by every test in this binary (as a server shares one).
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            slots: 512,
            epoch_tick: TICK,
            ..SandboxConfig::default()
        })
        .expect("building the test sandbox")
    })
}

pub fn load(wasm: &[u8]) -> Arc<Agent> {
    sandbox().load(wasm).expect("loading the agent")
}

/// Limits for hostile guests: a short timeout so a failing test fails fast.
pub fn tight() -> Limits {
    Limits {
        timeout_ms: 2_000,
        ..Limits::default()
    }
}

pub async fn run_with(wasm: &[u8], input: &[u8], limits: Limits) -> Attempt {
    let agent = load(wasm);
    let request = RunRequest {
        input: input.to_vec(),
        limits,
        ..RunRequest::default()
    };
    sandbox().run(&agent, request, &CancelToken::new()).await
}

/// Runs `wasm` once on the shared sandbox with `request` as it is.
pub async fn run_request(wasm: &[u8], request: RunRequest) -> Attempt {
    let agent = load(wasm);
    sandbox().run(&agent, request, &CancelToken::new()).await
}

/// The host side of child tasks in these tests: ids `child-00001`, `child-00002`, ...
/// (11 bytes, one per accepted spec), and every spec accepted but those naming the module
/// `forbidden`.
#[derive(Debug, Default)]
pub struct TestHost {
    minted: AtomicU32,
}

impl ChildTasks for TestHost {
    fn check(&self, spec: &TaskSpec, _earlier: &[Child]) -> Result<(), String> {
        if spec.module == "forbidden" {
            return Err("module \"forbidden\" is not allowed here".into());
        }
        Ok(())
    }

    fn mint_id(&self) -> String {
        format!(
            "child-{:05}",
            self.minted.fetch_add(1, Ordering::Relaxed) + 1
        )
    }
}

/// A grant of child tasks to a task at `depth`, with a fresh [`TestHost`].
pub fn grant(depth: u32) -> TaskGrant {
    TaskGrant {
        depth,
        host: Arc::new(TestHost::default()),
    }
}

/// Runs `wasm` with `input`, `args` and the child task grant `tasks`; returns the attempt
/// and the children it submitted.
pub async fn run_tasks(
    wasm: &[u8],
    input: &[u8],
    args: &[&str],
    tasks: Option<TaskGrant>,
    limits: Limits,
) -> RunResult {
    let agent = load(wasm);
    let request = RunRequest {
        input: input.to_vec(),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        limits,
        tasks,
        ..RunRequest::default()
    };
    sandbox()
        .run_with_children(&agent, request, &CancelToken::new())
        .await
}

/// The ids of `children`, in order.
pub fn ids(children: &[Child]) -> Vec<&str> {
    children.iter().map(|child| child.id.as_str()).collect()
}

/// `child-00001` to `child-{n}`.
pub fn first_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("child-{i:05}")).collect()
}

pub async fn run(wasm: &[u8], input: &[u8]) -> Attempt {
    run_with(wasm, input, tight()).await
}

pub async fn run_fixture(name: &str, limits: Limits) -> Attempt {
    run_with(&fabric_agents::fixture(name), b"", limits).await
}

/// Asserts the outcome, printing the whole attempt when it differs.
#[track_caller]
pub fn assert_outcome(attempt: &Attempt, outcome: Outcome) {
    assert_eq!(
        attempt.outcome,
        outcome,
        "attempt: {}",
        serde_json::to_string_pretty(attempt).unwrap()
    );
}

/// The sandbox still runs an ordinary agent correctly after whatever came before.
pub async fn assert_healthy() {
    let attempt = run(fabric_agents::p1::ECHO, b"still alive").await;
    assert_outcome(&attempt, Outcome::Ok);
    assert_eq!(attempt.output, b"still alive");
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sandbox survived an attack: an ordinary preview 1 module and an ordinary preview 2
/// component each echo a fresh input on `sandbox` (the engine, its instance pool, its
/// epoch ticker and its module cache all still work), with [`tight`] limits but at most
/// the memory the sandbox allows.
pub async fn assert_serves(sandbox: &Sandbox) {
    for (kind, wasm) in [
        ("p1", fabric_agents::p1::ECHO),
        ("p2", fabric_agents::p2::ECHO),
    ] {
        let agent = sandbox.load(wasm).expect("loading the echo agent");
        let input = format!("{kind} echo still served");
        let limits = tight();
        let request = RunRequest {
            input: input.clone().into_bytes(),
            limits: Limits {
                memory_bytes: limits.memory_bytes.min(sandbox.config().max_memory_bytes),
                ..limits
            },
            ..RunRequest::default()
        };
        let attempt = sandbox.run(&agent, request, &CancelToken::new()).await;
        assert_outcome(&attempt, Outcome::Ok);
        assert_eq!(text(&attempt.output), input, "{kind}");
    }
}
