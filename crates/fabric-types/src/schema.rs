//! JSON Schemas for what the derives cannot see: timestamps, which the wire types hold as
//! `time::OffsetDateTime` and write as RFC 3339 strings.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An RFC 3339 timestamp (`2026-01-01T00:00:00.000Z`); for `#[schemars(schema_with)]` on
/// the fields that serde writes with `crate::millis` or `time::serde::rfc3339`.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}
