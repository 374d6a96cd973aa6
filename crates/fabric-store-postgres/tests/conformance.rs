//! Runs the fabric-store conformance suite on a fresh PostgreSQL schema per case; each
//! schema is dropped when its case ends, passing or panicking.

mod util;

use std::sync::Arc;

use fabric_store::Store;

async fn make() -> (Arc<dyn Store>, util::SchemaGuard) {
    let (store, guard) = util::store().await;
    (Arc::new(store), guard)
}

fabric_store::conformance_tests!(make);
