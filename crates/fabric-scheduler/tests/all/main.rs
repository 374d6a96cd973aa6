//! Integration tests of the scheduler on the real SQLite store and the real sandbox.

mod lifecycle;
mod slots;
mod tenant_cap;
mod util;
