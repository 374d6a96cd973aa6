//! End-to-end tests of the `fabric` binary: each starts the real executable.

mod client;
mod run;
mod util;
