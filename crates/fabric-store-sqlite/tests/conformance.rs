//! Runs the fabric-store conformance suite on a fresh SQLite database per case.

use std::sync::Arc;

use fabric_store::Store;
use fabric_store_sqlite::{SqliteOptions, SqliteStore};

async fn make() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("fabric.db"), SqliteOptions::default())
        .expect("open the store");
    (Arc::new(store), dir)
}

fabric_store::conformance_tests!(make);
