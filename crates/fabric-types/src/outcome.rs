//! How an attempt ended, what it used, and the attempt record of docs/api.md.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::Kpis;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest finished with exit code 0.
    Ok,
    /// The guest exited with a non-zero code.
    Exit,
    /// The guest trapped (the kind is in [`Attempt::trap`]).
    Trap,
    /// The wall-clock timeout passed.
    Timeout,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The guest tried to grow past its memory or table limits.
    MemoryLimit,
    /// The module cannot be instantiated (unknown import, no entry point, ...).
    Invalid,
    /// Cancelled from outside while it ran.
    Cancelled,
    /// Its worker died; found by the lease.
    Lost,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Exit,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::OutOfFuel,
        Outcome::MemoryLimit,
        Outcome::Invalid,
        Outcome::Cancelled,
        Outcome::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Exit => "exit",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Invalid => "invalid",
            Outcome::Cancelled => "cancelled",
            Outcome::Lost => "lost",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attempt outcome {0:?}")]
pub struct ParseOutcomeError(String);

impl FromStr for Outcome {
    type Err = ParseOutcomeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| ParseOutcomeError(s.to_string()))
    }
}

/// What an attempt used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub fuel_consumed: u64,
    /// The most linear memory the instance held at once, all memories together.
    pub peak_memory_bytes: u64,
    pub wall_ms: u64,
    /// Outbound HTTP requests the host sent for the guest (allowed by a policy).
    #[serde(default)]
    pub http_requests: u64,
    /// Request body bytes sent to peers.
    #[serde(default)]
    pub http_bytes_sent: u64,
    /// Response body bytes received from peers.
    #[serde(default)]
    pub http_bytes_received: u64,
    /// Outbound requests refused (no policy allowed them, a bound was reached, or the
    /// address check).
    #[serde(default)]
    pub http_denied: u64,
}

impl Usage {
    /// The attempt's peak memory times its wall time: what `usage.report` bills as
    /// `memory_byte_seconds` (saturating).
    pub fn memory_byte_seconds(&self) -> u64 {
        let product = u128::from(self.peak_memory_bytes) * u128::from(self.wall_ms) / 1000;
        u64::try_from(product).unwrap_or(u64::MAX)
    }
}

/// An outbound request the host refused: what the guest asked for (scheme, authority and
/// path; never the query or a header) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Denial {
    pub url: String,
    pub reason: String,
}

/// One attempt at a task, as docs/api.md's `Attempt` (and what `fabric run --json` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// The guest's exit code, when it exited (0 for `ok`).
    pub exit_code: Option<i32>,
    /// The trap kind, for `trap` (for example `unreachable`, `stack_overflow`).
    pub trap: Option<String>,
    /// A human explanation for outcomes that are not the guest's doing (`invalid`, ...).
    pub error: Option<String>,
    /// Stdout, up to the output cap.
    pub output: Vec<u8>,
    /// Stderr, up to the log cap.
    pub stderr: Vec<u8>,
    /// The guest wrote more stdout than the cap; the rest was discarded.
    pub output_truncated: bool,
    /// The guest wrote more stderr than the cap; the rest was discarded.
    pub stderr_truncated: bool,
    pub usage: Usage,
    /// The first outbound requests the host refused (at most 16; `usage.http_denied`
    /// counts them all).
    pub denials: Vec<Denial>,
    /// The KPIs the agent recorded, by name (kept for failed attempts too).
    pub kpis: Kpis,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

impl Attempt {
    /// An attempt with this outcome and nothing else recorded.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            exit_code: None,
            trap: None,
            error: None,
            output: Vec::new(),
            stderr: Vec::new(),
            output_truncated: false,
            stderr_truncated: false,
            usage: Usage::default(),
            denials: Vec::new(),
            kpis: Kpis::new(),
            started_at: None,
            finished_at: None,
        }
    }
}

/// Formats a timestamp as RFC 3339 in UTC with millisecond precision.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// One attempt at a task (docs/api.md `Attempt`): stdout as `output` when it is UTF-8,
/// as `output_base64` otherwise.
#[derive(Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Attempt")]
struct WireAttempt {
    outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    output_truncated: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    stderr_truncated: bool,
    usage: Usage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    denials: Vec<Denial>,
    #[serde(default, skip_serializing_if = "Kpis::is_empty")]
    kpis: Kpis,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::millis::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::millis::option"
    )]
    #[schemars(schema_with = "crate::schema::date_time")]
    finished_at: Option<OffsetDateTime>,
}

/// Text when the bytes are UTF-8, otherwise base64: `(text, base64)`.
pub fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

impl Serialize for Attempt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (output, output_base64) = text_or_base64(&self.output);
        let stderr =
            (!self.stderr.is_empty()).then(|| String::from_utf8_lossy(&self.stderr).into_owned());
        WireAttempt {
            outcome: self.outcome,
            exit_code: self.exit_code,
            trap: self.trap.clone(),
            error: self.error.clone(),
            output,
            output_base64,
            stderr,
            output_truncated: self.output_truncated,
            stderr_truncated: self.stderr_truncated,
            usage: self.usage,
            denials: self.denials.clone(),
            kpis: self.kpis.clone(),
            started_at: self.started_at.map(truncate_to_millis),
            finished_at: self.finished_at.map(truncate_to_millis),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Attempt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireAttempt::deserialize(d)?;
        let output = match (wire.output, wire.output_base64) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(b64)) => BASE64.decode(b64).map_err(serde::de::Error::custom)?,
            (None, None) => Vec::new(),
        };
        Ok(Attempt {
            outcome: wire.outcome,
            exit_code: wire.exit_code,
            trap: wire.trap,
            error: wire.error,
            output,
            stderr: wire.stderr.map(String::into_bytes).unwrap_or_default(),
            output_truncated: wire.output_truncated,
            stderr_truncated: wire.stderr_truncated,
            usage: wire.usage,
            denials: wire.denials,
            kpis: wire.kpis,
            started_at: wire.started_at,
            finished_at: wire.finished_at,
        })
    }
}

/// The schema of the wire shape the `Serialize` and `Deserialize` impls go through.
impl JsonSchema for Attempt {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        WireAttempt::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        WireAttempt::json_schema(generator)
    }
}

/// Drops sub-millisecond precision so a timestamp prints with exactly three decimals.
fn truncate_to_millis(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_output_is_text_and_other_bytes_are_base64() {
        let mut attempt = Attempt::new(Outcome::Ok);
        attempt.output = b"hello".to_vec();
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["output"], "hello");
        assert!(json.get("output_base64").is_none());
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["usage"]["fuel_consumed"], 0);

        attempt.output = vec![0xff, 0x00, 0xfe];
        let json = serde_json::to_value(&attempt).unwrap();
        assert!(json.get("output").is_none());
        assert_eq!(json["output_base64"], "/wD+");
        let back: Attempt = serde_json::from_value(json).unwrap();
        assert_eq!(back.output, vec![0xff, 0x00, 0xfe]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(format_timestamp(at), "2023-11-14T22:13:20.123Z");
        let mut attempt = Attempt::new(Outcome::Timeout);
        attempt.started_at = Some(at);
        let json = serde_json::to_value(&attempt).unwrap();
        assert_eq!(json["started_at"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn outcomes_use_the_api_names() {
        for o in Outcome::ALL {
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
    }
}
