//! End-to-end tests of the `fabric` binary: each starts the real executable.

mod api;
mod demo;
mod client;
mod faults;
mod run;
mod scheduling;
mod server;
mod util;
