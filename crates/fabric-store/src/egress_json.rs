//! How both backends store egress: a task's policy names, and an attempt's HTTP usage and
//! denials, as JSON text that is absent (NULL) in the common case of no egress at all.

use fabric_types::{Denial, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What an attempt's `egress` column holds.
#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    #[serde(default)]
    http_requests: u64,
    #[serde(default)]
    http_bytes_sent: u64,
    #[serde(default)]
    http_bytes_received: u64,
    #[serde(default)]
    http_denied: u64,
    #[serde(default)]
    denials: Vec<Denial>,
}

/// An attempt's HTTP usage and denials as stored: `None` when it made no request and had no
/// denial.
pub fn attempt_encode(usage: &Usage, denials: &[Denial]) -> Option<String> {
    let stored = StoredAttempt {
        http_requests: usage.http_requests,
        http_bytes_sent: usage.http_bytes_sent,
        http_bytes_received: usage.http_bytes_received,
        http_denied: usage.http_denied,
        denials: denials.to_vec(),
    };
    let nothing = stored.http_requests == 0
        && stored.http_bytes_sent == 0
        && stored.http_bytes_received == 0
        && stored.http_denied == 0
        && stored.denials.is_empty();
    (!nothing).then(|| serde_json::to_string(&stored).expect("counts and strings serialize"))
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
    let stored: StoredAttempt =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))?;
    usage.http_requests = stored.http_requests;
    usage.http_bytes_sent = stored.http_bytes_sent;
    usage.http_bytes_received = stored.http_bytes_received;
    usage.http_denied = stored.http_denied;
    *denials = stored.denials;
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
