//! Store operation benchmarks.
fn main() {}
