//! The embedded SQLite backend of the fabric store.
