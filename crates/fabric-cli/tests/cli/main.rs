//! End-to-end tests of the `fabric` binary: each starts the real executable.

mod run;
mod util;
