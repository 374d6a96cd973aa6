//! Store operations per batch size on a file database: insert, claim, complete, and many
//! concurrent single-task inserts sharing group-commit transactions.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fabric_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::runtime::Runtime;

fn store_ops(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("bench.db"), SqliteOptions::default()).unwrap();
    fabric_store::bench::store_ops(c, &runtime, Arc::new(store));
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
