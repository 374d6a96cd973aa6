//! Server configuration: the options a front end gives (flags and environment variables
//! in `fabric serve`) over a TOML file (in that order of precedence), resolved against
//! named defaults into a validated [`ServerConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fabric_types::{parse_duration, parse_size};
use serde::{Deserialize, Deserializer};

/// Every option of a server before it is resolved, `None` where unset: what the TOML file
/// holds (its keys are the field names; a key the file does not know is an error) and
/// what a front end fills in from its own sources (`fabric serve` from flags and
/// `FABRIC_*` environment variables).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// TOML file with any of these options (keys are the long flag names with `_`).
    /// Flags and environment variables take precedence over it.
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API. Without --auth only loopback addresses are accepted.
    /// [default: 127.0.0.1:7070]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded database and the precompiled module cache.
    /// [default: ./fabric-data]
    pub data_dir: Option<PathBuf>,
    /// Where tasks are stored: `sqlite://PATH` or `postgres://...`.
    /// [default: sqlite://<data-dir>/fabric.db]
    pub store: Option<String>,
    /// The most attempts running at once on this node. [default: 64]
    pub workers: Option<u32>,
    /// Turns on authentication: a TOML file of `[[token]]` tables (see `fabric token new`).
    pub auth: Option<PathBuf>,
    /// Serve HTTPS (and WSS) with this PEM certificate chain; needs tls_key.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of tls_cert; needs tls_cert.
    pub tls_key: Option<PathBuf>,
    /// How long SIGTERM waits for running attempts before interrupting them. [default: 30s]
    #[serde(default, deserialize_with = "duration")]
    pub grace: Option<Duration>,
    /// This node's name in the store. [default: <hostname>-<pid>]
    pub node: Option<String>,
    /// SQLite durability: `normal` survives a process crash, `full` also power loss.
    /// [default: normal]
    pub synchronous: Option<SyncMode>,
    /// Largest HTTP request body. [default: 48MiB]
    #[serde(default, deserialize_with = "size")]
    pub max_request_bytes: Option<u64>,
    /// Most requests in one JSON-RPC batch, and most tasks in one `task.submit_batch`.
    /// [default: 10000]
    pub max_batch: Option<usize>,
    /// Largest task input. [default: 1MiB]
    #[serde(default, deserialize_with = "size")]
    pub max_input_bytes: Option<u64>,
    /// Largest module or component. [default: 32MiB]
    #[serde(default, deserialize_with = "size")]
    pub max_module_bytes: Option<u64>,
    /// Largest memory limit a task may ask for. [default: 256MiB]
    #[serde(default, deserialize_with = "size")]
    pub max_task_memory: Option<u64>,
    /// Most unfinished (waiting, queued, scheduled, running) tasks one tenant may have. [default: 1000000]
    pub tenant_max_tasks: Option<u64>,
    /// Most attempts of one tenant running at once on this node, so that one tenant's
    /// long-running attempts cannot hold every worker while other tenants' tasks queue.
    /// At or above --workers it never binds. [default: with --auth half the workers, at
    /// least 1; without, all the workers]
    pub tenant_max_running: Option<u32>,
    /// Most distinct KPI names one attempt may record. [default: 64]
    pub max_kpi_names: Option<u32>,
    /// Most telemetry calls (`kpi` and `progress` together) one attempt may make.
    /// [default: 10000]
    pub max_telemetry_calls: Option<u32>,
    /// Most module bytes one tenant may store. [default: 1GiB]
    #[serde(default, deserialize_with = "size")]
    pub tenant_max_module_bytes: Option<u64>,
    /// How long finished tasks are kept before they are pruned. [default: 7 days]
    #[serde(default, deserialize_with = "duration")]
    pub retention: Option<Duration>,
    /// How long a claimed task stays with this node without a heartbeat. [default: 10s]
    #[serde(default, deserialize_with = "duration")]
    pub lease: Option<Duration>,
    /// Longest `task.wait`. [default: 5m]
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
    /// With a postgres:// store: the schema that holds the fabric's tables (created at
    /// start when missing); nodes that share work use the same one. [default: fabric]
    pub postgres_schema: Option<String>,
    /// With a postgres:// store: the most connections this node opens (one more listens
    /// for other nodes' work). [default: 16]
    pub postgres_pool: Option<usize>,
    /// A host directory tasks may be granted read-only, `NAME=DIR` (repeatable, or
    /// comma-separated). A task names the volume, never a path:
    /// `"dirs": {"/data": "NAME"}`. NAME is 1-64 of `a-z 0-9 _ -`; DIR must be a directory.
    /// In the file: `volume = ["data=/srv/data"]`. Given as a flag or in the environment,
    /// the list replaces the file's.
    pub volume: Option<Vec<String>>,
    /// Egress policies tasks may name in `egress` (components' outbound HTTP): in the file
    /// `[[egress]]` tables (`name`, `allow`, `private`, `headers`, `max_requests`,
    /// `max_response_bytes`, `max_request_bytes`, `ca_cert`); as a flag `NAME=URL[,URL...]`
    /// with the default bounds. The flags' policies are added to the file's.
    pub egress: Option<Vec<crate::egress::EgressTable>>,
}

/// SQLite's `synchronous` setting, as the options name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Normal,
    Full,
}

/// The PEM files of `--tls-cert` and `--tls-key`, read when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where tasks are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A PostgreSQL database that several nodes may share.
    Postgres {
        url: String,
        /// The schema that holds the tables.
        schema: String,
        /// The most pooled connections of this node.
        pool: usize,
    },
}

/// The resolved, validated configuration of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreUrl,
    pub workers: u32,
    pub auth: Option<PathBuf>,
    /// HTTPS instead of HTTP: the certificate chain and key files.
    pub tls: Option<TlsFiles>,
    pub grace: Duration,
    pub node: String,
    pub synchronous: SyncMode,
    pub max_request_bytes: u64,
    pub max_batch: usize,
    pub max_input_bytes: u64,
    pub max_module_bytes: u64,
    pub max_task_memory: u64,
    pub tenant_max_tasks: u64,
    /// Most attempts of one tenant running at once on this node.
    pub tenant_max_running: u32,
    /// Most distinct KPI names one attempt may record.
    pub max_kpi_names: u32,
    /// Most telemetry calls one attempt may make.
    pub max_telemetry_calls: u32,
    pub tenant_max_module_bytes: u64,
    pub retention: Duration,
    pub lease: Duration,
    pub max_wait: Duration,
    /// Volumes tasks may be granted read-only: name → canonical host directory.
    pub volumes: BTreeMap<String, PathBuf>,
    /// Egress policies tasks may name, by name, their secrets read from the environment.
    pub egress: BTreeMap<String, std::sync::Arc<fabric_sandbox::EgressPolicy>>,
    /// Where traces go (OTLP/HTTP); `None`, the default, traces nothing. Set from the
    /// `OTEL_*` environment variables by the command line (see `OtelConfig::from_env`).
    pub otel: Option<crate::otel::OtelConfig>,
}

impl ServerConfig {
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
    pub const DEFAULT_DATA_DIR: &str = "./fabric-data";
    pub const DEFAULT_WORKERS: u32 = fabric_scheduler::SchedulerConfig::DEFAULT_WORKERS;
    pub const MAX_WORKERS: u32 = 100_000;
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 48 << 20;
    pub const DEFAULT_MAX_BATCH: usize = 10_000;
    pub const DEFAULT_MAX_INPUT_BYTES: u64 = 1 << 20;
    pub const DEFAULT_MAX_MODULE_BYTES: u64 = 32 << 20;
    pub const DEFAULT_MAX_TASK_MEMORY: u64 = 256 << 20;
    pub const DEFAULT_TENANT_MAX_TASKS: u64 = 1_000_000;
    pub const DEFAULT_TENANT_MAX_MODULE_BYTES: u64 = 1 << 30;
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);
    pub const DEFAULT_POSTGRES_SCHEMA: &str = "fabric";
    pub const DEFAULT_POSTGRES_POOL: usize = 16;
    /// The longest volume name.
    pub const MAX_VOLUME_NAME: usize = 64;

    /// Resolves `flags` (command line and environment) over the TOML file they name (if
    /// any) over the defaults, and validates the result.
    pub fn resolve(flags: ServeOptions) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => ServeOptions::default(),
        };
        Self::merge(flags, file)
    }

    /// Defaults with every option unset; what tests and embedders start from.
    pub fn defaults() -> Self {
        Self::merge(ServeOptions::default(), ServeOptions::default())
            .expect("the defaults are valid")
    }

    fn merge(flags: ServeOptions, file: ServeOptions) -> Result<Self, ConfigError> {
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                flags
                    .$field
                    .clone()
                    .or(file.$field.clone())
                    .unwrap_or($default)
            };
        }
        let data_dir = pick!(data_dir, PathBuf::from(Self::DEFAULT_DATA_DIR));
        let store = match flags.store.clone().or(file.store.clone()) {
            Some(url) => parse_store_url(&url)?,
            None => StoreUrl::Sqlite(data_dir.join("fabric.db")),
        };
        let store = match store {
            StoreUrl::Postgres { url, .. } => StoreUrl::Postgres {
                url,
                schema: pick!(postgres_schema, Self::DEFAULT_POSTGRES_SCHEMA.to_owned()),
                pool: pick!(postgres_pool, Self::DEFAULT_POSTGRES_POOL),
            },
            sqlite => sqlite,
        };
        let workers = pick!(workers, Self::DEFAULT_WORKERS);
        let auth = flags.auth.clone().or(file.auth.clone());
        // Without --auth every request is the one tenant `default`: a cap could only idle
        // workers, so it is off (all the workers).
        let tenant_cap = match auth {
            Some(_) => fabric_scheduler::SchedulerConfig::fair_share(workers),
            None => workers,
        };
        let tls = match (
            flags.tls_cert.clone().or(file.tls_cert.clone()),
            flags.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    option: "tls_key",
                    reason: "--tls-cert needs --tls-key (the certificate's private key)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    option: "tls_cert",
                    reason: "--tls-key needs --tls-cert (the certificate chain it belongs to)"
                        .into(),
                });
            }
        };
        let config = Self {
            tls,
            listen: pick!(listen, Self::DEFAULT_LISTEN.parse().expect("valid address")),
            store,
            workers,
            auth,
            grace: pick!(grace, Self::DEFAULT_GRACE),
            node: pick!(node, default_node_name()),
            synchronous: pick!(synchronous, SyncMode::Normal),
            max_request_bytes: pick!(max_request_bytes, Self::DEFAULT_MAX_REQUEST_BYTES),
            max_batch: pick!(max_batch, Self::DEFAULT_MAX_BATCH),
            max_input_bytes: pick!(max_input_bytes, Self::DEFAULT_MAX_INPUT_BYTES),
            max_module_bytes: pick!(max_module_bytes, Self::DEFAULT_MAX_MODULE_BYTES),
            max_task_memory: pick!(max_task_memory, Self::DEFAULT_MAX_TASK_MEMORY),
            tenant_max_tasks: pick!(tenant_max_tasks, Self::DEFAULT_TENANT_MAX_TASKS),
            tenant_max_running: pick!(tenant_max_running, tenant_cap),
            max_kpi_names: pick!(
                max_kpi_names,
                fabric_sandbox::SandboxConfig::DEFAULT_MAX_KPI_NAMES as u32
            ),
            max_telemetry_calls: pick!(
                max_telemetry_calls,
                fabric_sandbox::SandboxConfig::DEFAULT_MAX_TELEMETRY_CALLS
            ),
            tenant_max_module_bytes: pick!(
                tenant_max_module_bytes,
                Self::DEFAULT_TENANT_MAX_MODULE_BYTES
            ),
            retention: pick!(retention, Self::DEFAULT_RETENTION),
            lease: pick!(lease, Self::DEFAULT_LEASE),
            max_wait: pick!(max_wait, Self::DEFAULT_MAX_WAIT),
            volumes: volumes(&pick!(volume, Vec::new()))?,
            egress: crate::egress::policies(
                &[
                    file.egress.clone().unwrap_or_default(),
                    flags.egress.clone().unwrap_or_default(),
                ]
                .concat(),
                |var| std::env::var(var).ok(),
            )?,
            data_dir,
            otel: None,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |option: &'static str, reason: String| ConfigError::Invalid { option, reason };
        if self.auth.is_none() && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address; without --auth the fabric only listens on loopback",
                    self.listen
                ),
            ));
        }
        if self.workers == 0 || self.workers > Self::MAX_WORKERS {
            return Err(invalid(
                "workers",
                format!("{} is out of range 1..={}", self.workers, Self::MAX_WORKERS),
            ));
        }
        if self.tenant_max_running == 0 {
            return Err(invalid(
                "tenant_max_running",
                "must be at least 1 (at or above workers it never binds)".into(),
            ));
        }
        let most_names = fabric_sandbox::SandboxConfig::MAX_KPI_NAMES;
        if self.max_kpi_names == 0 || self.max_kpi_names as usize > most_names {
            return Err(invalid(
                "max_kpi_names",
                format!("{} is out of range 1..={most_names}", self.max_kpi_names),
            ));
        }
        if self.max_telemetry_calls == 0 {
            return Err(invalid("max_telemetry_calls", "must be at least 1".into()));
        }
        if self.max_batch == 0 {
            return Err(invalid("max_batch", "must be at least 1".into()));
        }
        if self.max_request_bytes < 1024 {
            return Err(invalid("max_request_bytes", "must be at least 1KiB".into()));
        }
        if self.max_task_memory < 64 << 10 {
            return Err(invalid(
                "max_task_memory",
                "must be at least 64KiB (one Wasm page)".into(),
            ));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(invalid("lease", "must be at least 300ms".into()));
        }
        if self.node.is_empty() {
            return Err(invalid("node", "must not be empty".into()));
        }
        if let StoreUrl::Postgres { pool: 0, .. } = self.store {
            return Err(invalid("postgres_pool", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Whether `name` can name a volume: 1-64 of `a-z 0-9 _ -`.
pub fn is_volume_name(name: &str) -> bool {
    (1..=ServerConfig::MAX_VOLUME_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses `NAME=DIR` entries into volumes: valid distinct names, each an existing
/// directory, canonicalized (so a symlink swapped in later does not move the volume), and
/// holding no FIFO, socket or device (`fabric_sandbox::scan_grant`).
fn volumes(entries: &[String]) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        option: "volume",
        reason,
    };
    let mut out = BTreeMap::new();
    for entry in entries {
        let Some((name, dir)) = entry.split_once('=') else {
            return Err(invalid(format!("{entry:?}: expected NAME=DIR")));
        };
        if !is_volume_name(name) {
            return Err(invalid(format!(
                "{entry:?}: the name {name:?} must be 1 to {} of a-z 0-9 _ -",
                ServerConfig::MAX_VOLUME_NAME
            )));
        }
        if dir.is_empty() {
            return Err(invalid(format!("{entry:?}: the directory is missing")));
        }
        let host = std::fs::canonicalize(dir)
            .map_err(|e| invalid(format!("{entry:?}: cannot use {dir}: {e}")))?;
        if !host.is_dir() {
            return Err(invalid(format!("{entry:?}: {dir} is not a directory")));
        }
        fabric_sandbox::scan_grant(&host).map_err(|e| invalid(format!("{entry:?}: {e}")))?;
        if out.insert(name.to_owned(), host).is_some() {
            return Err(invalid(format!("the volume {name:?} is defined twice")));
        }
    }
    Ok(out)
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid option {option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

fn read_file(path: &Path) -> Result<ServeOptions, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        message: err.to_string(),
    })
}

fn parse_store_url(url: &str) -> Result<StoreUrl, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(ConfigError::Invalid {
                option: "store",
                reason: "sqlite:// needs a path, e.g. sqlite://./fabric-data/fabric.db".into(),
            });
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres {
            url: url.to_owned(),
            schema: ServerConfig::DEFAULT_POSTGRES_SCHEMA.to_owned(),
            pool: ServerConfig::DEFAULT_POSTGRES_POOL,
        });
    }
    Err(ConfigError::Invalid {
        option: "store",
        reason: format!("{url:?}: expected sqlite://PATH or postgres://..."),
    })
}

fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "fabric".into());
    format!("{host}-{}", std::process::id())
}

/// A size in the TOML file: a number of bytes or a string such as `"16MiB"`.
pub(crate) fn size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(bytes) => Ok(Some(bytes)),
        NumberOrText::Text(text) => parse_size(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A duration in the TOML file: milliseconds or a string such as `"30s"`.
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(ms) => Ok(Some(Duration::from_millis(ms))),
        NumberOrText::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<ServeOptions, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_tenant_cap_defaults_to_half_the_workers_with_auth_and_zero_is_refused() {
        let with = |workers, cap| {
            ServerConfig::merge(
                ServeOptions {
                    workers: Some(workers),
                    tenant_max_running: cap,
                    auth: Some("tokens.toml".into()),
                    ..ServeOptions::default()
                },
                ServeOptions::default(),
            )
        };
        assert_eq!(with(6, None).unwrap().tenant_max_running, 3);
        assert_eq!(with(7, None).unwrap().tenant_max_running, 3);
        assert_eq!(with(1, None).unwrap().tenant_max_running, 1);
        assert_eq!(
            ServerConfig::defaults().tenant_max_running,
            ServerConfig::DEFAULT_WORKERS,
            "without --auth there is one tenant: the cap is off"
        );
        assert_eq!(with(6, Some(9)).unwrap().tenant_max_running, 9);
        let err = with(6, Some(0)).unwrap_err().to_string();
        assert!(
            err.contains("invalid option tenant_max_running: must be at least 1"),
            "{err}"
        );
        let from_file = ServerConfig::merge(
            ServeOptions::default(),
            file("tenant_max_running = 2").unwrap(),
        )
        .unwrap();
        assert_eq!(from_file.tenant_max_running, 2);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let flags = ServeOptions {
            workers: Some(8),
            ..ServeOptions::default()
        };
        let file =
            file("workers = 4\ngrace = \"2s\"\nmax_input_bytes = \"64KiB\"\nlease = 1500").unwrap();
        let config = ServerConfig::merge(flags, file).unwrap();
        assert_eq!(config.workers, 8);
        assert_eq!(config.grace, Duration::from_secs(2));
        assert_eq!(config.max_input_bytes, 64 << 10);
        assert_eq!(config.lease, Duration::from_millis(1500));
        assert_eq!(config.max_batch, ServerConfig::DEFAULT_MAX_BATCH);
        assert_eq!(
            config.store,
            StoreUrl::Sqlite(PathBuf::from("./fabric-data/fabric.db"))
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_errors() {
        let err = file("wokers = 4").unwrap_err().to_string();
        assert!(err.contains("unknown field `wokers`"), "{err}");
        let err = file("grace = \"soon\"").unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
        let err = file("config = \"x.toml\"").unwrap_err().to_string();
        assert!(err.contains("unknown field `config`"), "{err}");
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_together_from_flags_or_the_file() {
        let cert = ServeOptions {
            tls_cert: Some("cert.pem".into()),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(cert.clone(), ServeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("--tls-cert needs --tls-key"),
            "{err}"
        );
        let key = ServeOptions {
            tls_key: Some("key.pem".into()),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(key.clone(), ServeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("--tls-key needs --tls-cert"),
            "{err}"
        );
        // The flag's certificate with the file's key.
        let both = ServerConfig::merge(cert, key).unwrap();
        assert_eq!(
            both.tls,
            Some(TlsFiles {
                cert: "cert.pem".into(),
                key: "key.pem".into()
            })
        );
        assert_eq!(ServerConfig::defaults().tls, None);
    }

    #[test]
    fn without_auth_only_loopback_is_accepted() {
        let flags = ServeOptions {
            listen: Some("0.0.0.0:7070".parse().unwrap()),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(flags.clone(), ServeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let with_auth = ServeOptions {
            auth: Some("tokens.toml".into()),
            ..flags
        };
        assert!(ServerConfig::merge(with_auth, ServeOptions::default()).is_ok());
    }

    #[test]
    fn store_urls_are_checked() {
        assert_eq!(
            parse_store_url("sqlite:///tmp/x.db").unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            parse_store_url("postgres://localhost/fabric").unwrap(),
            StoreUrl::Postgres { .. }
        ));
        let err = parse_store_url("mysql://x").unwrap_err().to_string();
        assert!(err.contains("mysql://x"), "{err}");
    }

    #[test]
    fn postgres_options_apply_to_a_postgres_store_only() {
        let flags = ServeOptions {
            store: Some("postgres://db/fabric".into()),
            postgres_schema: Some("blue".into()),
            ..ServeOptions::default()
        };
        let file = ServeOptions {
            postgres_pool: Some(4),
            ..ServeOptions::default()
        };
        let config = ServerConfig::merge(flags, file).unwrap();
        assert_eq!(
            config.store,
            StoreUrl::Postgres {
                url: "postgres://db/fabric".into(),
                schema: "blue".into(),
                pool: 4
            }
        );
        let zero = ServeOptions {
            store: Some("postgres://db/fabric".into()),
            postgres_pool: Some(0),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(zero, ServeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("postgres_pool"), "{err}");
    }

    #[test]
    fn volumes_are_named_directories_canonicalized() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&data, root.path().join("link")).unwrap();
        let plain = root.path().join("file.txt");
        std::fs::write(&plain, "x").unwrap();
        let flags = ServeOptions {
            volume: Some(vec![
                format!("data={}", data.display()),
                format!("via_link-2={}", root.path().join("link").display()),
            ]),
            ..ServeOptions::default()
        };
        let other = tempfile::tempdir().unwrap();
        let other_dir = std::fs::canonicalize(other.path()).unwrap();
        let from_file = file(&format!("volume = [\"other={}\"]", other_dir.display())).unwrap();
        let config = ServerConfig::merge(flags, from_file.clone()).unwrap();
        let canonical = std::fs::canonicalize(&data).unwrap();
        assert_eq!(
            config.volumes,
            BTreeMap::from([
                ("data".to_owned(), canonical.clone()),
                ("via_link-2".to_owned(), canonical),
            ]),
            "the flags replace the file's list; a link is resolved"
        );
        let config = ServerConfig::merge(ServeOptions::default(), from_file).unwrap();
        assert_eq!(config.volumes["other"], other_dir);
        assert!(ServerConfig::defaults().volumes.is_empty());

        let missing = root.path().join("missing");
        for (entry, expected) in [
            ("data".to_owned(), "expected NAME=DIR".to_owned()),
            (
                format!("Data={}", data.display()),
                "must be 1 to 64 of".into(),
            ),
            (format!("={}", data.display()), "must be 1 to 64 of".into()),
            (
                format!("{}={}", "x".repeat(65), data.display()),
                "must be 1 to 64".into(),
            ),
            ("data=".to_owned(), "the directory is missing".into()),
            (
                format!("data={}", missing.display()),
                format!("cannot use {}: No such file", missing.display()),
            ),
            (
                format!("data={}", plain.display()),
                format!("{} is not a directory", plain.display()),
            ),
        ] {
            let flags = ServeOptions {
                volume: Some(vec![entry.clone()]),
                ..ServeOptions::default()
            };
            let err = ServerConfig::merge(flags, ServeOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid option volume: "), "{entry}: {err}");
            assert!(err.contains(&expected), "{entry}: {err}");
        }
        let twice = ServeOptions {
            volume: Some(vec![
                format!("data={}", data.display()),
                format!("data={}", root.path().display()),
            ]),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(twice, ServeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("\"data\" is defined twice"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_name_the_option() {
        let flags = ServeOptions {
            workers: Some(0),
            ..ServeOptions::default()
        };
        let err = ServerConfig::merge(flags, ServeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
    }
}
