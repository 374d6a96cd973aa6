//! The OpenTelemetry trace export's configuration, read from the standard `OTEL_*`
//! environment variables through an injectable lookup and validated: every bad value is an
//! error naming its variable.

use std::time::Duration;

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default): `application/x-protobuf`.
    Protobuf,
    /// `http/json`: `application/json`, OTLP's JSON mapping.
    Json,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// A trace id whose low 8 bytes, as a number, fall below this fraction of their range.
    Ratio(f64),
    /// The caller's `sampled` flag when a call has a `traceparent`, else the inner sampler.
    ParentBased(Root),
}

/// The sampler of traces that start here, under [`Sampler::ParentBased`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// A validated trace export configuration: tracing is on.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// Where spans are posted: the traces URL itself.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export (e.g. a collector's API key). Values are never logged.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
    pub sampler: Sampler,
    /// How long one export may take before it is abandoned (its spans dropped).
    pub timeout: Duration,
    /// Finished spans held for export; past it new spans are dropped and counted.
    pub max_queue: usize,
    /// Most spans in one export request.
    pub max_batch: usize,
    /// Longest wait between exports while fewer than `max_batch` spans are queued.
    pub schedule_delay: Duration,
}

/// A variable with a value this server cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct OtelConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl OtelConfig {
    pub const DEFAULT_SERVICE_NAME: &str = "fabric";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_QUEUE: usize = 2048;
    pub const DEFAULT_MAX_BATCH: usize = 512;
    pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
    /// The largest `OTEL_BSP_MAX_QUEUE_SIZE` accepted (a span is a few hundred bytes).
    pub const MAX_QUEUE: usize = 1 << 20;

    /// The configuration the `OTEL_*` variables describe (`lookup` reads one; tests pass a
    /// map), or `None` when tracing is off: no endpoint is set, `OTEL_SDK_DISABLED=true`,
    /// or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, OtelConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(disabled) = get("OTEL_SDK_DISABLED") {
            match disabled.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(err("OTEL_SDK_DISABLED", "must be true or false")),
            }
        }
        if let Some(exporter) = get("OTEL_TRACES_EXPORTER") {
            match exporter.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                other => {
                    return Err(err(
                        "OTEL_TRACES_EXPORTER",
                        format!("{other:?} is not supported: otlp or none"),
                    ));
                }
            }
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.trim())?,
            (None, Some(base)) => {
                let base = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.trim())?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, None) => return Ok(None),
        };
        let (protocol_var, protocol) = first(
            &get,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        );
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some(other) => {
                return Err(err(
                    protocol_var,
                    format!("{other:?} is not supported: http/protobuf or http/json"),
                ));
            }
        };
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = get(var) {
                for (name, value) in pairs(var, &list)? {
                    check_header(var, &name, &value)?;
                    headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(&name));
                    headers.push((name, value));
                }
            }
        }
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(list) => pairs("OTEL_RESOURCE_ATTRIBUTES", &list)?,
            None => Vec::new(),
        };
        let service_name = get("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_string())
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| Self::DEFAULT_SERVICE_NAME.to_string());
        resource.retain(|(k, _)| k != "service.name");
        let (timeout_var, timeout) = first(
            &get,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        );
        let timeout = match timeout {
            Some(ms) => Duration::from_millis(number(timeout_var, &ms, 1, 600_000)?),
            None => Self::DEFAULT_TIMEOUT,
        };
        let max_queue = match get("OTEL_BSP_MAX_QUEUE_SIZE") {
            Some(v) => number("OTEL_BSP_MAX_QUEUE_SIZE", &v, 1, Self::MAX_QUEUE as u64)? as usize,
            None => Self::DEFAULT_MAX_QUEUE,
        };
        let max_batch = match get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            Some(v) => number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &v, 1, max_queue as u64)? as usize,
            None => Self::DEFAULT_MAX_BATCH.min(max_queue),
        };
        let schedule_delay = match get("OTEL_BSP_SCHEDULE_DELAY") {
            Some(v) => Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", &v, 1, 600_000)?),
            None => Self::DEFAULT_SCHEDULE_DELAY,
        };
        Ok(Some(Self {
            endpoint,
            protocol,
            headers,
            service_name,
            resource,
            sampler: sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?,
            timeout,
            max_queue,
            max_batch,
            schedule_delay,
        }))
    }
}

fn err(variable: &'static str, message: impl Into<String>) -> OtelConfigError {
    OtelConfigError {
        variable,
        message: message.into(),
    }
}

/// The first of `names` that is set, with its name (the last name when none is).
fn first(
    get: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> (&'static str, Option<String>) {
    for name in names {
        if let Some(value) = get(name) {
            return (name, Some(value));
        }
    }
    (names[names.len() - 1], None)
}

fn check_url(variable: &'static str, url: &str) -> Result<String, OtelConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            err(
                variable,
                format!("{url:?} is not an http:// or https:// URL"),
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(err(variable, format!("{url:?} names no host")));
    }
    Ok(url.to_string())
}

fn number(variable: &'static str, text: &str, min: u64, max: u64) -> Result<u64, OtelConfigError> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            variable,
            format!("{text:?} is not a whole number from {min} to {max}"),
        )),
    }
}

/// `key=value,key=value` (W3C baggage style, as the OTel variables use), values
/// percent-decoded; blanks around keys and values are ignored.
fn pairs(variable: &'static str, list: &str) -> Result<Vec<(String, String)>, OtelConfigError> {
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| err(variable, format!("{:?} is not key=value", item.trim())))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(err(variable, format!("{:?} has an empty key", item.trim())));
            }
            let value = percent_decode(value.trim()).ok_or_else(|| {
                err(
                    variable,
                    format!("the value of {key:?} is not valid percent-encoded UTF-8"),
                )
            })?;
            Ok((key.to_string(), value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn check_header(variable: &'static str, name: &str, value: &str) -> Result<(), OtelConfigError> {
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value_ok = value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    if !name_ok {
        return Err(err(variable, format!("{name:?} is not a header name")));
    }
    if !value_ok {
        return Err(err(
            variable,
            format!("the value of header {name} is not a valid header value"),
        ));
    }
    Ok(())
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, OtelConfigError> {
    let ratio = || -> Result<f64, OtelConfigError> {
        match &arg {
            None => Ok(1.0),
            Some(text) => match text.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(err(
                    "OTEL_TRACES_SAMPLER_ARG",
                    format!("{text:?} is not a ratio from 0 to 1"),
                )),
            },
        }
    };
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(ratio()?),
        Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
        Some(other) => {
            return Err(err(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "{other:?} is not supported: always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    })
}

impl Sampler {
    /// Whether a call's trace is recorded: `parent` is the caller's `sampled` flag when
    /// it sent a valid `traceparent`.
    pub fn sampled(&self, trace_id: &[u8; 16], parent: Option<bool>) -> bool {
        let ratio = |r: f64| {
            // The low 8 bytes (random in W3C ids), compared with the ratio of their range.
            let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
            r >= 1.0 || (low as f64) < r * (u64::MAX as f64)
        };
        match (self, parent) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::Ratio(r), _) => ratio(*r),
            (Sampler::ParentBased(_), Some(sampled)) => sampled,
            (Sampler::ParentBased(Root::AlwaysOn), None) => true,
            (Sampler::ParentBased(Root::AlwaysOff), None) => false,
            (Sampler::ParentBased(Root::Ratio(r)), None) => ratio(*r),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<OtelConfig>, OtelConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelConfig::from_env(|k| vars.get(k).cloned())
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(config(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(config(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(
            config(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
        assert!(
            config(&[endpoint, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn the_endpoint_protocol_and_headers_follow_the_standard_variables() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(c.protocol, Protocol::Protobuf);
        assert_eq!(c.service_name, "fabric");
        assert_eq!(c.sampler, Sampler::ParentBased(Root::AlwaysOn));
        assert_eq!(c.timeout, OtelConfig::DEFAULT_TIMEOUT);
        assert_eq!((c.max_queue, c.max_batch), (2048, 512));

        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c.example/otlp/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%20ecret, x-team = infra",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "API-KEY=other"),
            ("OTEL_SERVICE_NAME", "fabric-eu"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=x",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://c.example/otlp/traces");
        assert_eq!(c.protocol, Protocol::Json);
        assert_eq!(
            c.headers,
            [
                ("x-team".to_string(), "infra".to_string()),
                ("API-KEY".to_string(), "other".to_string())
            ]
        );
        assert_eq!(c.service_name, "fabric-eu");
        assert_eq!(
            c.resource,
            [("deployment.environment".to_string(), "prod".to_string())]
        );
        assert_eq!(c.sampler, Sampler::ParentBased(Root::Ratio(0.25)));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!((c.max_queue, c.max_batch), (100, 100));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (vars, variable) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=v")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "k=%0a")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    endpoint,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![endpoint, ("OTEL_SDK_DISABLED", "yes")],
                "OTEL_SDK_DISABLED",
            ),
            (
                vec![endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![endpoint, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE",
            ),
        ] {
            let e = config(&vars).unwrap_err();
            assert_eq!(e.variable, variable, "{vars:?}: {e}");
        }
    }

    #[test]
    fn samplers_follow_the_parent_or_the_ratio() {
        let low = [0u8; 16];
        let mut high = [0u8; 16];
        high[8..].copy_from_slice(&u64::MAX.to_be_bytes());
        let parent_based = Sampler::ParentBased(Root::AlwaysOn);
        assert!(parent_based.sampled(&high, None));
        assert!(parent_based.sampled(&high, Some(true)));
        assert!(!parent_based.sampled(&high, Some(false)));
        assert!(!Sampler::AlwaysOff.sampled(&low, Some(true)));
        assert!(Sampler::AlwaysOn.sampled(&low, Some(false)));
        assert!(Sampler::Ratio(0.5).sampled(&low, None));
        assert!(!Sampler::Ratio(0.5).sampled(&high, None));
        assert!(!Sampler::Ratio(0.0).sampled(&low, None));
        assert!(Sampler::ParentBased(Root::Ratio(0.0)).sampled(&low, Some(true)));
    }
}
