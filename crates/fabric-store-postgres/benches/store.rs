//! Store operations per batch size on a PostgreSQL schema of their own: insert, claim,
//! complete, and many concurrent single-task inserts (each its own transaction, spread over
//! the pool). Needs the database of `FABRIC_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the schema is dropped at the end.

#[path = "../tests/util/mod.rs"]
mod util;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fabric_store_postgres::PostgresOptions;
use tokio::runtime::Runtime;

fn store_ops(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let guard = util::SchemaGuard::new(util::fresh_schema());
    let options = PostgresOptions {
        application_name: "fabric-bench".into(),
        ..PostgresOptions::default().with_schema(&guard.schema)
    };
    let store = runtime.block_on(util::connect(options));
    fabric_store::bench::store_ops(c, &runtime, Arc::new(store));
    // Dropping `guard` after the store drops the bench schema.
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
