//! How both backends store egress: a task's policy names, and an attempt's HTTP usage and
//! denials, as JSON text that is absent (NULL) in the common case of no egress at all.

use fabric_types::{Denial, Usage};
use serde_json::{Map, Value, json};

use crate::StoreError;

/// A task's egress policy names as stored: `None` when it names none.
pub fn names_encode(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| Value::from(names.to_vec()).to_string())
}

/// A task's egress policy names from their stored text (`None` reads as none).
pub fn names_decode(text: Option<&str>, column: &str) -> Result<Vec<String>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Corrupt(format!("{column} is not a JSON array of strings: {e}"))
        }),
    }
}

/// An attempt's HTTP usage and denials as stored: `None` when it made no request and had no
/// denial.
pub fn attempt_encode(usage: &Usage, denials: &[Denial]) -> Option<String> {
    let Usage {
        http_requests,
        http_bytes_sent,
        http_bytes_received,
        http_denied,
        ..
    } = *usage;
    if http_requests == 0
        && http_bytes_sent == 0
        && http_bytes_received == 0
        && http_denied == 0
        && denials.is_empty()
    {
        return None;
    }
    let denials: Vec<Value> = denials
        .iter()
        .map(|d| json!({"url": d.url, "reason": d.reason}))
        .collect();
    Some(
        json!({
            "http_requests": http_requests,
            "http_bytes_sent": http_bytes_sent,
            "http_bytes_received": http_bytes_received,
            "http_denied": http_denied,
            "denials": denials,
        })
        .to_string(),
    )
}

/// Fills an attempt's HTTP usage and denials from their stored text (`None` leaves them
/// zero and empty).
pub fn attempt_decode(
    text: Option<&str>,
    column: &str,
    usage: &mut Usage,
    denials: &mut Vec<Denial>,
) -> Result<(), StoreError> {
    let Some(text) = text else { return Ok(()) };
    let corrupt = |what: &str| StoreError::Corrupt(format!("{column}: {what}"));
    let value: Value = serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| corrupt("not a JSON object"))?;
    let count = |key: &str| -> Result<u64, StoreError> {
        match object.get(key) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| corrupt(&format!("{key} is not a count"))),
        }
    };
    usage.http_requests = count("http_requests")?;
    usage.http_bytes_sent = count("http_bytes_sent")?;
    usage.http_bytes_received = count("http_bytes_received")?;
    usage.http_denied = count("http_denied")?;
    let empty = Vec::new();
    let list = match object.get("denials") {
        None => &empty,
        Some(v) => v
            .as_array()
            .ok_or_else(|| corrupt("denials is not an array"))?,
    };
    *denials = list
        .iter()
        .map(|d| {
            let d: &Map<String, Value> = d
                .as_object()
                .ok_or_else(|| corrupt("a denial is not an object"))?;
            let text = |key: &str| {
                d.get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| corrupt(&format!("a denial has no {key}")))
            };
            Ok(Denial {
                url: text("url")?,
                reason: text("reason")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_stored_for_no_egress_and_everything_round_trips() {
        assert_eq!(names_encode(&[]), None);
        assert_eq!(attempt_encode(&Usage::default(), &[]), None);
        let names = vec!["weather".to_string(), "search".to_string()];
        let text = names_encode(&names);
        assert_eq!(names_decode(text.as_deref(), "c").unwrap(), names);
        let usage = Usage {
            http_requests: 3,
            http_bytes_sent: 10,
            http_bytes_received: 200,
            http_denied: 2,
            ..Usage::default()
        };
        let denied = vec![Denial {
            url: "https://evil.example/".into(),
            reason: "no policy allows it".into(),
        }];
        let text = attempt_encode(&usage, &denied);
        let (mut u, mut d) = (Usage::default(), Vec::new());
        attempt_decode(text.as_deref(), "c", &mut u, &mut d).unwrap();
        assert_eq!((u, d), (usage, denied));
    }
}
