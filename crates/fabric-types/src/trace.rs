//! W3C trace context (the `traceparent` and `tracestate` headers), the trace context a task
//! keeps in the store, and the finished spans the fabric reports to whoever exports them.

use std::fmt;
use std::time::SystemTime;

/// The longest `tracestate` kept (the W3C limit is 32 list members; 512 characters is what
/// the specification asks a vendor to pass on at least). A longer one is dropped whole.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// A 16-byte trace id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// `bytes` as a trace id, `None` when they are all zeros (invalid).
    pub fn new(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }
}

impl SpanId {
    /// `bytes` as a span id, `None` when they are all zeros (invalid).
    pub fn new(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Lowercase hex of exactly `N` bytes (W3C: uppercase is invalid).
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// A caller's span, as a `traceparent` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The `sampled` flag: the caller records this trace.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header value by the W3C Trace Context rules: version `00`
    /// is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a later version may carry more after a
    /// `-`; version `ff`, uppercase hex and all-zero ids are invalid. `None` for anything
    /// invalid: the header is then ignored, as the specification says, never an error.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim_matches(|c| c == ' ' || c == '\t');
        if header.len() < 55 || !header.is_ascii() {
            return None;
        }
        let version = lower_hex::<1>(&header[..2])?[0];
        if version == 0xff || header.as_bytes()[2] != b'-' {
            return None;
        }
        if version == 0 && header.len() != 55 {
            return None;
        }
        if header.len() > 55 && header.as_bytes()[55] != b'-' {
            return None;
        }
        let (trace, rest) = header[3..].split_at(32);
        let rest = rest.strip_prefix('-')?;
        let (span, rest) = rest.split_at(16);
        let flags = rest.strip_prefix('-')?;
        let flags = lower_hex::<1>(&flags[..2])?[0];
        Some(Self {
            trace_id: TraceId::new(lower_hex(trace)?)?,
            span_id: SpanId::new(lower_hex(span)?)?,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value (version `00`).
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// A `tracestate` header value worth passing on: at most [`MAX_TRACESTATE_BYTES`], of
/// printable ASCII, each list member `key=value`. `None` otherwise (it is then dropped;
/// the `traceparent` still counts).
pub fn tracestate(header: &str) -> Option<String> {
    let header = header.trim_matches(|c| c == ' ' || c == '\t');
    if header.is_empty()
        || header.len() > MAX_TRACESTATE_BYTES
        || !header.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let members: Vec<&str> = header
        .split(',')
        .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() || members.len() > 32 {
        return None;
    }
    for member in &members {
        let (key, value) = member.split_once('=')?;
        if key.is_empty() || value.is_empty() || value.ends_with(' ') {
            return None;
        }
    }
    Some(members.join(","))
}

/// A task's trace context, stored with the task so that whichever node runs or ends it
/// reports its spans into the caller's trace: the trace, the task's own span (its
/// attempts' parent), that span's parent (the call that submitted it), when the task span
/// started (the submit), and the caller's `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    /// Nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub tracestate: Option<String>,
}

impl TaskTrace {
    /// The stored form: `<trace>-<span>-<parent or 16 zeros>-<start ns>` then, when there
    /// is one, a space and the `tracestate` (which has no spaces at its ends).
    pub fn encode(&self) -> String {
        let parent = self
            .parent_id
            .map_or_else(|| "0".repeat(16), |p| p.to_string());
        let mut out = format!(
            "{}-{}-{parent}-{}",
            self.trace_id, self.span_id, self.start_unix_nanos
        );
        if let Some(state) = &self.tracestate {
            out.push(' ');
            out.push_str(state);
        }
        out
    }

    /// The inverse of [`TaskTrace::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let (head, state) = match text.split_once(' ') {
            Some((head, state)) => (head, Some(state.to_string())),
            None => (text, None),
        };
        let mut parts = head.splitn(4, '-');
        let trace_id = TraceId::new(lower_hex(parts.next()?)?)?;
        let span_id = SpanId::new(lower_hex(parts.next()?)?)?;
        let parent_id = SpanId::new(lower_hex(parts.next()?)?);
        let start_unix_nanos = parts.next()?.parse().ok()?;
        Some(Self {
            trace_id,
            span_id,
            parent_id,
            start_unix_nanos,
            tracestate: state,
        })
    }
}

/// Nanoseconds since the Unix epoch of `at` (0 before it).
pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a span measured, as OpenTelemetry's span kinds say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    /// Handling a call from a client (an RPC).
    Server,
    /// A call to another service (an egress request).
    Client,
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub tracestate: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: SpanStatus,
}

/// Takes finished spans for export. `record` must never block nor fail: an exporter that
/// cannot keep up drops spans (and counts them).
pub trait SpanSink: Send + Sync + fmt::Debug {
    fn record(&self, span: SpanRecord);

    /// A new random span id.
    fn span_id(&self) -> SpanId;
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_parsed_and_written_back_the_same() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(parent.header(), VALID);
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // Other flag bits are ignored; only `sampled` counts.
        assert!(
            TraceParent::parse(&VALID.replace("-01", "-03"))
                .unwrap()
                .sampled
        );
        // Surrounding blanks are allowed.
        assert!(TraceParent::parse(&format!(" {VALID}\t")).is_some());
        // A later version may carry more fields after a dash.
        let future = format!("{}-extra", VALID.replacen("00", "cc", 1));
        assert_eq!(
            TraceParent::parse(&future).unwrap().trace_id,
            parent.trace_id
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let cases = [
            "",
            "garbage",
            // Version ff is forbidden.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero trace id and span id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Too short, too long for version 00, wrong separators.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            // A later version whose extra part does not start with a dash.
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Non-hex and non-ASCII.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ];
        for case in cases {
            assert_eq!(TraceParent::parse(case), None, "{case:?}");
        }
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed_and_bounded() {
        assert_eq!(
            tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(tracestate(""), None);
        assert_eq!(tracestate("novalue"), None);
        assert_eq!(tracestate("a=1,=2"), None);
        assert_eq!(tracestate("a=\u{7}"), None);
        assert_eq!(tracestate(&format!("a={}", "x".repeat(600))), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(tracestate(&many.join(",")), None);
    }

    #[test]
    fn a_task_trace_round_trips_through_its_stored_form() {
        let parent = TraceParent::parse(VALID).unwrap();
        let trace = TaskTrace {
            trace_id: parent.trace_id,
            span_id: SpanId::new([1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            parent_id: Some(parent.span_id),
            start_unix_nanos: 1_700_000_000_123_456_789,
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        let stored = trace.encode();
        assert_eq!(
            stored,
            "4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-00f067aa0ba902b7-1700000000123456789 congo=t61rcWkgMzE"
        );
        assert_eq!(TaskTrace::decode(&stored), Some(trace.clone()));
        let root = TaskTrace {
            parent_id: None,
            tracestate: None,
            ..trace
        };
        assert_eq!(TaskTrace::decode(&root.encode()), Some(root));
        assert_eq!(TaskTrace::decode("nonsense"), None);
        assert_eq!(TaskTrace::decode(""), None);
    }
}
