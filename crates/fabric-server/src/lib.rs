//! `fabric serve`: the JSON-RPC 2.0 API of docs/api.md over HTTP and WebSocket in front of the
//! store, the scheduler and the sandbox, with tenants, request limits, health, Prometheus
//! metrics and graceful shutdown.

mod admission;
mod auth;
mod children;
mod config;
mod discover;
mod egress;
mod http;
mod kpi_metrics;
mod memory;
mod methods;
mod metrics;
mod module_names;
mod otel;
mod reports;
mod retry;
mod rpc;
mod schedules;
mod server;
mod spec;
mod timed_store;
mod tls;
mod ui;
mod waiters;
mod ws;

pub use auth::{ADMIN_TENANT, Auth, DEFAULT_TENANT, Principal, token_digest};
pub use config::{ConfigError, ServeOptions, ServerConfig, StoreUrl, SyncMode, TlsFiles};
pub use discover::discover;
pub use egress::{EgressScope, EgressTable, MAX_TASK_EGRESS};
pub use kpi_metrics::MAX_KPI_SERIES;
pub use methods::{METHODS, Transport};
pub use metrics::read_rss_bytes;
pub use otel::{Otel, OtelConfig, OtelConfigError, Protocol as OtlpProtocol, Root, Sampler};
pub use rpc::{RpcError, handle_body};
pub use schedules::{MAX_SCHEDULE_NAME_BYTES, MAX_SCHEDULES_PER_TENANT, cron};
pub use server::{App, Phase, ServeError, Server, serve, signal};
pub use tls::TlsError;
