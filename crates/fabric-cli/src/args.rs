//! Command-line arguments of every `fabric` command, as docs/api.md lists them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The Execution Fabric: run WebAssembly agents you did not write, safely and durably.
#[derive(Debug, Parser)]
#[command(name = "fabric", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FABRIC_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one attempt of an agent in-process, with no server and no store.
    ///
    /// Exit status: 0 when the outcome is `ok`, 1 for any other outcome, 2 for bad usage
    /// or an unreadable module.
    Run(RunArgs),
    /// Store a module on a server, or list the stored ones.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Submit a task (or --count copies of it) to a server.
    ///
    /// Exit status: 0 when the tasks are stored (with --wait: when every one succeeded), 1
    /// when a task ended otherwise or the server answered an error, 2 for bad usage or an
    /// unreadable file.
    Submit(SubmitArgs),
    /// Read, wait for, cancel or list a server's tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Cron schedules that submit a task at each tick: put, get, list, delete.
    #[command(subcommand)]
    Schedule(crate::client_cmd::ScheduleCommand),
    /// Metered usage for billing: attempts, fuel, wall time, memory and HTTP of every
    /// attempt, by tenant, module or day.
    Usage(UsageArgs),
    /// KPI aggregates the agents recorded: count, sum, min, max and mean by KPI name, and by
    /// module, tenant or hour.
    Kpi(KpiArgs),
    /// Make access tokens for `fabric serve --auth`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the JSON-RPC API: store tasks durably and run them with a pool of workers.
    ///
    /// Every option can also come from its environment variable or from the TOML file
    /// named by --config (flags win over the environment, which wins over the file).
    Serve(ServeArgs),
    /// Start a server on the embedded store, load the example agents, run a mixed
    /// workload (priorities, a retry, a timeout, isolation) and print a summary; then keep
    /// serving for the client commands until Ctrl-C.
    Demo(DemoArgs),
    /// Drive a server (or one started in-process with --embedded) with tasks and report
    /// throughput, latency percentiles, attempt outcomes and the server's memory.
    ///
    /// Exit status: 0 when the run completed (whatever the tasks' outcomes), 1 when the
    /// server could not be reached or refused a call, 2 for bad usage.
    Load(crate::load_cmd::LoadArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after the summary instead of serving on.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub options: ServeFlags,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub options: ServeFlags,
}

/// Every option of `fabric serve` as flags and `FABRIC_*` environment variables, one for
/// each key of the TOML file ([`fabric_server::ServeOptions`]): the conversion below names
/// every field of both, so an option cannot be added to one and not the other, and
/// `fabric serve --help` lists every key.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeFlags {
    /// TOML file with any of these options (keys are the long flag names with `_`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, env = "FABRIC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API. Without --auth only loopback addresses are accepted.
    /// [default: 127.0.0.1:7070]
    #[arg(long, env = "FABRIC_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory for the embedded database and the precompiled module cache.
    /// [default: ./fabric-data]
    #[arg(long, env = "FABRIC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where tasks are stored: `sqlite://PATH` or `postgres://...`.
    /// [default: sqlite://<data-dir>/fabric.db]
    #[arg(long, env = "FABRIC_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The most attempts running at once on this node. [default: 128]
    #[arg(long, env = "FABRIC_WORKERS")]
    pub workers: Option<u32>,
    /// Turns on authentication: a TOML file of `[[token]]` tables (see `fabric token new`).
    #[arg(long, env = "FABRIC_AUTH", value_name = "FILE")]
    pub auth: Option<PathBuf>,
    /// Serve HTTPS (and WSS) with this PEM certificate chain; needs --tls-key.
    #[arg(long, env = "FABRIC_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FABRIC_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// How long SIGTERM waits for running attempts before interrupting them. [default: 30s]
    #[arg(long, env = "FABRIC_GRACE", value_parser = fabric_types::parse_duration)]
    pub grace: Option<Duration>,
    /// This node's name in the store. [default: <hostname>-<pid>]
    #[arg(long, env = "FABRIC_NODE")]
    pub node: Option<String>,
    /// SQLite durability: `normal` survives a process crash, `full` also power loss.
    /// [default: normal]
    #[arg(long, env = "FABRIC_SYNCHRONOUS", value_enum)]
    pub synchronous: Option<SyncMode>,
    /// Largest HTTP request body. [default: 48MiB]
    #[arg(long, env = "FABRIC_MAX_REQUEST_BYTES", value_parser = fabric_types::parse_size, value_name = "SIZE")]
    pub max_request_bytes: Option<u64>,
    /// Most requests in one JSON-RPC batch, and most tasks in one `task.submit_batch`.
    /// [default: 10000]
    #[arg(long, env = "FABRIC_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Largest task input. [default: 1MiB]
    #[arg(long, env = "FABRIC_MAX_INPUT_BYTES", value_parser = fabric_types::parse_size, value_name = "SIZE")]
    pub max_input_bytes: Option<u64>,
    /// Largest module or component. [default: 32MiB]
    #[arg(long, env = "FABRIC_MAX_MODULE_BYTES", value_parser = fabric_types::parse_size, value_name = "SIZE")]
    pub max_module_bytes: Option<u64>,
    /// Largest memory limit a task may ask for. [default: 256MiB]
    #[arg(long, env = "FABRIC_MAX_TASK_MEMORY", value_parser = fabric_types::parse_size, value_name = "SIZE")]
    pub max_task_memory: Option<u64>,
    /// Most unfinished (waiting, queued, scheduled, running) tasks one tenant may have. [default: 1000000]
    #[arg(long, env = "FABRIC_TENANT_MAX_TASKS")]
    pub tenant_max_tasks: Option<u64>,
    /// Most attempts of one tenant running at once on this node, so that one tenant's
    /// long-running attempts cannot hold every worker while other tenants' tasks queue.
    /// At or above --workers it never binds. [default: with --auth half the workers, at
    /// least 1; without, all the workers]
    #[arg(long, env = "FABRIC_TENANT_MAX_RUNNING", value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_max_running: Option<u32>,
    /// Most distinct KPI names one attempt may record; past it, new names are refused
    /// (the agent sees the refusal and goes on). [default: 64]
    #[arg(long, env = "FABRIC_MAX_KPI_NAMES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_kpi_names: Option<u32>,
    /// Most telemetry calls (`kpi` and `progress` together) one attempt may make; past
    /// it, calls are refused cheaply and the attempt goes on. [default: 10000]
    #[arg(long, env = "FABRIC_MAX_TELEMETRY_CALLS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_telemetry_calls: Option<u32>,
    /// Most module bytes one tenant may store. [default: 1GiB]
    #[arg(long, env = "FABRIC_TENANT_MAX_MODULE_BYTES", value_parser = fabric_types::parse_size, value_name = "SIZE")]
    pub tenant_max_module_bytes: Option<u64>,
    /// How long finished tasks are kept before they are pruned. [default: 7 days]
    #[arg(long, env = "FABRIC_RETENTION", value_parser = fabric_types::parse_duration)]
    pub retention: Option<Duration>,
    /// How long a claimed task stays with this node without a heartbeat. [default: 10s]
    #[arg(long, env = "FABRIC_LEASE", value_parser = fabric_types::parse_duration)]
    pub lease: Option<Duration>,
    /// Longest `task.wait`. [default: 5m]
    #[arg(long, env = "FABRIC_MAX_WAIT", value_parser = fabric_types::parse_duration)]
    pub max_wait: Option<Duration>,
    /// With a postgres:// store: the schema that holds the fabric's tables (created at
    /// start when missing); nodes that share work use the same one. [default: fabric]
    #[arg(long, env = "FABRIC_POSTGRES_SCHEMA", value_name = "NAME")]
    pub postgres_schema: Option<String>,
    /// With a postgres:// store: the most connections this node opens (one more listens
    /// for other nodes' work). [default: 16]
    #[arg(long, env = "FABRIC_POSTGRES_POOL")]
    pub postgres_pool: Option<usize>,
    /// A host directory tasks may be granted read-only, `NAME=DIR` (repeatable, or
    /// comma-separated). A task names the volume, never a path:
    /// `"dirs": {"/data": "NAME"}`. NAME is 1-64 of `a-z 0-9 _ -`; DIR must be a directory.
    /// In the file: `volume = ["data=/srv/data"]`. Given as a flag or in the environment,
    /// the list replaces the file's.
    #[arg(
        long = "volume",
        env = "FABRIC_VOLUMES",
        value_name = "NAME=DIR",
        value_delimiter = ','
    )]
    pub volume: Option<Vec<String>>,
    /// An egress policy tasks may name in `egress`, `NAME=URL[,URL...]` (repeatable; in
    /// the environment `;`-separated): components' outbound HTTP to those
    /// `scheme://host[:port]` rules with the default bounds, public addresses only unless a
    /// rule names an IP literal. Headers (secrets), private addresses and other bounds are
    /// set in the config file's `[[egress]]` tables, to which these are added.
    #[arg(
        long = "egress",
        env = "FABRIC_EGRESS",
        value_name = "NAME=URL[,URL...]",
        value_delimiter = ';',
        value_parser = fabric_server::EgressTable::parse_flag
    )]
    pub egress: Option<Vec<fabric_server::EgressTable>>,
}

/// SQLite's `synchronous` setting, as the flag names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    Normal,
    Full,
}

impl From<ServeFlags> for fabric_server::ServeOptions {
    fn from(flags: ServeFlags) -> Self {
        let ServeFlags {
            config,
            listen,
            data_dir,
            store,
            workers,
            auth,
            tls_cert,
            tls_key,
            grace,
            node,
            synchronous,
            max_request_bytes,
            max_batch,
            max_input_bytes,
            max_module_bytes,
            max_task_memory,
            tenant_max_tasks,
            tenant_max_running,
            max_kpi_names,
            max_telemetry_calls,
            tenant_max_module_bytes,
            retention,
            lease,
            max_wait,
            postgres_schema,
            postgres_pool,
            volume,
            egress,
        } = flags;
        Self {
            config,
            listen,
            data_dir,
            store,
            workers,
            auth,
            tls_cert,
            tls_key,
            grace,
            node,
            synchronous: synchronous.map(|mode| match mode {
                SyncMode::Normal => fabric_server::SyncMode::Normal,
                SyncMode::Full => fabric_server::SyncMode::Full,
            }),
            max_request_bytes,
            max_batch,
            max_input_bytes,
            max_module_bytes,
            max_task_memory,
            tenant_max_tasks,
            tenant_max_running,
            max_kpi_names,
            max_telemetry_calls,
            tenant_max_module_bytes,
            retention,
            lease,
            max_wait,
            postgres_schema,
            postgres_pool,
            volume,
            egress,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent: a WASI preview 1 module or preview 2 component (`.wasm`), or WebAssembly
    /// text (`.wat`).
    pub module: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Environment variable granted to the agent, `NAME=VALUE` (repeatable). Nothing from
    /// the host's environment is ever passed.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Host directory granted read-only, `HOST[:GUEST]` (repeatable). The agent sees it as
    /// GUEST, an absolute path, `/data` when omitted; it can read and list it, never write.
    /// Nothing else of the host's filesystem is visible. A HOST with a `:` needs a GUEST.
    #[arg(long = "dir", value_name = "HOST[:GUEST]", value_parser = crate::run_cmd::parse_dir_grant)]
    pub dirs: Vec<fabric_sandbox::DirGrant>,
    /// Outbound HTTP the agent may make, `scheme://host[:port]` (repeatable; `*.` matches
    /// any subdomain; components only: core modules get no HTTP). Names must resolve to
    /// public addresses unless --allow-private; a rule naming an IP literal allows that
    /// address. Everything else is denied.
    #[arg(long = "allow", value_name = "URL", value_parser = parse_egress_rule)]
    pub allow: Vec<String>,
    /// Let the names of --allow rules resolve to loopback, private and link-local
    /// addresses.
    #[arg(long, requires = "allow")]
    pub allow_private: bool,
    /// Print exactly one JSON object, the attempt, on stdout.
    #[arg(long)]
    pub json: bool,
    /// Arguments for the agent, after its program name (`agent`): everything after the
    /// module, or after `--` (`fabric run md.wasm -- --strict README.md`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Checks an `--allow` rule, keeping its text.
fn parse_egress_rule(text: &str) -> Result<String, String> {
    fabric_sandbox::Rule::parse(text).map(|_| text.to_string())
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct InputArgs {
    /// The input, fed to the agent on stdin.
    #[arg(long)]
    pub input: Option<String>,
    /// Read the input from FILE (`-` for this process's stdin).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Fuel budget (about one unit per Wasm instruction). [default: 10000000000]
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit for the whole instance: 65536, 64KiB, 16MiB, 1GiB. [default: 64MiB]
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Wall-clock timeout, instantiation included: 1500ms, 2s, 1m. [default: 30s]
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Most stdout kept as the output; the rest is discarded. [default: 1MiB]
    #[arg(long, value_parser = parse_size)]
    pub output_limit: Option<u64>,
    /// Most stderr kept as the log. [default: 64KiB]
    #[arg(long, value_parser = parse_size)]
    pub log_limit: Option<u64>,
}

impl LimitArgs {
    /// The limits named on the command line, defaults for the rest.
    pub fn to_limits(&self) -> fabric_types::Limits {
        let defaults = fabric_types::Limits::default();
        fabric_types::Limits {
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self.memory.unwrap_or(defaults.memory_bytes),
            timeout_ms: self
                .timeout
                .map_or(defaults.timeout_ms, |t| t.as_millis() as u64),
            output_bytes: self.output_limit.unwrap_or(defaults.output_bytes),
            log_bytes: self.log_limit.unwrap_or(defaults.log_bytes),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    fabric_types::parse_size(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    fabric_types::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_env_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// `KEY=LIMIT`, split at the last `=`; the server checks the bounds.
fn parse_concurrency(text: &str) -> Result<(String, u32), String> {
    match text.rsplit_once('=') {
        Some((key, limit)) if !key.is_empty() => limit
            .parse()
            .map(|limit| (key.to_string(), limit))
            .map_err(|_| format!("the limit in {text:?} is not a whole number")),
        _ => Err(format!(
            "expected KEY=LIMIT such as model-api=4, got {text:?}"
        )),
    }
}

/// `GUEST=VOLUME`, split at the last `=` (a volume name has none); the server checks both.
fn parse_volume_grant(text: &str) -> Result<(String, String), String> {
    match text.rsplit_once('=') {
        Some((guest, volume)) if !guest.is_empty() && !volume.is_empty() => {
            Ok((guest.to_string(), volume.to_string()))
        }
        _ => Err(format!(
            "expected GUEST=VOLUME such as /data=shared, got {text:?}"
        )),
    }
}

/// Where a client command finds its server, and how it prints the answer.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "FABRIC_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// PEM file of the CA certificate(s) to trust for an `https://` server (a private CA);
    /// without it, the public web's roots (webpki-roots).
    #[arg(long, value_name = "FILE", env = "FABRIC_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for a server started with --auth.
    #[arg(long, value_name = "T", env = "FABRIC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print exactly one JSON object on stdout: the task for `submit --wait`, `task get`
    /// and `task wait` (one per line for several), otherwise the method's result.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Store a module or component (`.wasm`, or WebAssembly text `.wat`); prints its id.
    Put(ModulePutArgs),
    /// List the stored modules.
    Ls(ModuleLsArgs),
    /// Delete a stored module (refused while unfinished tasks use it); frees its quota.
    Rm(ModuleRmArgs),
}

#[derive(Debug, Args)]
pub struct ModulePutArgs {
    /// The module: `.wasm` bytes, or WebAssembly text (`.wat`).
    pub file: PathBuf,
    /// A name to submit tasks by instead of the `sha256:<hex>` id.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ModuleLsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ModuleRmArgs {
    /// The module: `sha256:<hex>` or a name given with `fabric module put --name`.
    pub module: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The module: `sha256:<hex>` or a name given with `fabric module put --name`.
    pub module: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// critical, high, normal, low or background. [default: normal]
    #[arg(long, value_parser = parse_priority)]
    pub priority: Option<fabric_types::Priority>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Most attempts, the first included. [default: the server's]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// A key that makes resubmitting the same task harmless: the server answers the task
    /// it already has. With --count N the copies get keys K-0 .. K-(N-1).
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
    /// Environment variable granted to the agent, `NAME=VALUE` (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Label stored with the task, `NAME=VALUE` (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub labels: Vec<(String, String)>,
    /// Directory granted read-only, `GUEST=VOLUME` (repeatable): the server's volume
    /// VOLUME (`fabric serve --volume`) seen by the agent at GUEST, such as `/data=shared`.
    #[arg(long = "dir", value_name = "GUEST=VOLUME", value_parser = parse_volume_grant)]
    pub dirs: Vec<(String, String)>,
    /// Egress policy the task's attempts may send HTTP requests under, by the name the
    /// server's operator gave it (repeatable; components only).
    #[arg(long = "egress", value_name = "POLICY")]
    pub egress: Vec<String>,
    /// Do not start before this time (RFC 3339, for example 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub run_at: Option<time::OffsetDateTime>,
    /// Give up (state expired) when not finished by this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub deadline: Option<time::OffsetDateTime>,
    /// Run after the task ID has succeeded (repeatable, at most 100): the task waits
    /// (state waiting) until all of them succeeded, and is cancelled when one does not.
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    /// Run with the input {"input": <input>, "after": [{"id", "state", "output"}, ...]}
    /// built from the outputs of the --after tasks.
    #[arg(long, requires = "after")]
    pub pass_outputs: bool,
    /// Run at most LIMIT attempts of this tenant's tasks with the concurrency key KEY at
    /// once, across every node: `KEY=LIMIT`, such as `model-api=4`.
    #[arg(long, value_name = "KEY=LIMIT", value_parser = parse_concurrency)]
    pub concurrency: Option<(String, u32)>,
    /// Submit N copies, in batches, with a progress bar on a terminal.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Wait until the tasks are finished, and print them.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Arguments for the agent, after its program name: everything after the module, or
    /// after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Attempts finished at or after this time (RFC 3339; rounded down to its hour).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub since: Option<time::OffsetDateTime>,
    /// Attempts finished before this time (RFC 3339; rounded up to an hour).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub until: Option<time::OffsetDateTime>,
    /// One row per tenant, module or day (UTC).
    #[arg(long = "by", value_enum, default_value_t = UsageBy::Tenant)]
    pub by: UsageBy,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UsageBy {
    Tenant,
    Module,
    Day,
}

#[derive(Debug, Args)]
pub struct KpiArgs {
    /// Only this module's attempts (an id or a name).
    #[arg(long)]
    pub module: Option<String>,
    /// Only this KPI.
    #[arg(long)]
    pub name: Option<String>,
    /// Attempts finished at or after this time (RFC 3339; rounded down to its hour).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub since: Option<time::OffsetDateTime>,
    /// Attempts finished before this time (RFC 3339; rounded up to an hour).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub until: Option<time::OffsetDateTime>,
    /// One row per KPI name, and per module, tenant or hour (UTC).
    #[arg(long = "by", value_enum, default_value_t = KpiBy::Name)]
    pub by: KpiBy,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KpiBy {
    Name,
    Module,
    Tenant,
    Hour,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// One task: its state, attempts and output.
    Get(TaskIdArgs),
    /// Wait until each task is finished, and print it.
    ///
    /// Exit status: 0 when every task succeeded, 1 otherwise (or at the timeout).
    Wait(TaskWaitArgs),
    /// Cancel a task: at once when waiting, within an epoch tick when running.
    Cancel(TaskIdArgs),
    /// List tasks, newest first.
    Ls(TaskLsArgs),
    /// Queue a failed, cancelled or expired task again: a new task with the same spec,
    /// labelled retry_of=ID.
    Retry(TaskIdArgs),
}

#[derive(Debug, Args)]
pub struct TaskIdArgs {
    /// The task id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TaskWaitArgs {
    /// The task ids.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Stop waiting after this long (1500ms, 2s, 1m): the tasks are printed as they are
    /// and the exit status is 1. [default: wait until finished]
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TaskLsArgs {
    /// Only tasks in this state: waiting, scheduled, queued, running, succeeded, failed,
    /// cancelled or expired.
    #[arg(long, value_name = "S", value_parser = parse_task_state)]
    pub state: Option<fabric_types::TaskState>,
    /// Only tasks of this module: `sha256:<hex>` or a name.
    #[arg(long)]
    pub module: Option<String>,
    /// Only tasks with this label, `NAME=VALUE` (repeatable: all must match).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub labels: Vec<(String, String)>,
    /// Only the child tasks of the task ID.
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Most tasks to show (1 to 1000). [default: the server's, 100]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue a listing where the previous page ended (its next cursor).
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the `[[token]]` table to add to the --auth file.
    New(TokenNewArgs),
}

#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// The tenant the token acts as: 1-64 characters of A-Z a-z 0-9 _ . -
    #[arg(long, value_parser = parse_tenant, required_unless_present = "admin", conflicts_with = "admin")]
    pub tenant: Option<String>,
    /// An admin token, which sees every tenant.
    #[arg(long)]
    pub admin: bool,
    /// Print one JSON object: {token, sha256, tenant | role}.
    #[arg(long)]
    pub json: bool,
}

fn parse_priority(text: &str) -> Result<fabric_types::Priority, String> {
    text.parse()
        .map_err(|e: fabric_types::ParsePriorityError| e.to_string())
}

fn parse_task_state(text: &str) -> Result<fabric_types::TaskState, String> {
    text.parse()
        .map_err(|e: fabric_types::ParseTaskStateError| e.to_string())
}

fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time such as 2030-01-01T00:00:00Z: {e}"))
}

fn parse_tenant(text: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "a tenant is 1-64 characters of A-Z a-z 0-9 _ . -, got {text:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn input_and_input_file_exclude_each_other() {
        let err = Cli::try_parse_from([
            "fabric",
            "run",
            "a.wasm",
            "--input",
            "x",
            "--input-file",
            "f",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn limits_parse_units_and_default_the_rest() {
        let cli = Cli::try_parse_from([
            "fabric",
            "run",
            "a.wasm",
            "--memory",
            "16MiB",
            "--timeout",
            "1500ms",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not a run command");
        };
        let limits = args.limits.to_limits();
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.timeout_ms, 1500);
        assert_eq!(limits.fuel, fabric_types::Limits::DEFAULT_FUEL);
        assert!(Cli::try_parse_from(["fabric", "run", "a.wasm", "--memory", "lots"]).is_err());
    }
}
