//! End-to-end tests of the `fabric` binary: each starts the real executable.

mod api;
mod binary;
mod client;
mod cluster;
mod demo;
mod disk;
mod egress;
mod fairness;
mod faults;
mod hostmem;
mod load;
mod modules;
mod monitoring;
mod otel;
mod otlp;
mod reports;
mod retry;
mod run;
mod scheduling;
mod server;
mod tls;
mod ui;
mod uploads;
mod util;
mod volumes;
