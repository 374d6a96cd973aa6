//! Integration tests of the sandbox: every outcome and every limit, each with a guest that
//! really does the thing, on WASI preview 1 modules and preview 2 components.

mod args;
mod cache;
mod compile;
mod isolation;
mod limits;
mod outcomes;
mod pool;
mod security;
mod tasks;
mod telemetry;
mod util;
