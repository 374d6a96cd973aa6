//! Concurrency keys: at most `limit` attempts of one tenant's tasks that name the same
//! `key` run at once, across every node.

use serde::{Deserialize, Serialize};

/// The longest concurrency key, in bytes.
pub const MAX_CONCURRENCY_KEY_BYTES: usize = 128;
/// The largest concurrency limit.
pub const MAX_CONCURRENCY_LIMIT: u32 = 10_000;

/// A task's concurrency key and the most attempts of its tenant's tasks with that key that
/// may run at once (checked against this task's own `limit` when it is claimed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
}

impl Concurrency {
    /// Checks the bounds: a key of 1 to [`MAX_CONCURRENCY_KEY_BYTES`] bytes without control
    /// characters, a limit of 1 to [`MAX_CONCURRENCY_LIMIT`]. The error names the field
    /// (`key` or `limit`) and says why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.key.is_empty()
            || self.key.len() > MAX_CONCURRENCY_KEY_BYTES
            || self.key.chars().any(char::is_control)
        {
            return Err((
                "key",
                format!(
                    "must be 1 to {MAX_CONCURRENCY_KEY_BYTES} bytes without control characters"
                ),
            ));
        }
        if !(1..=MAX_CONCURRENCY_LIMIT).contains(&self.limit) {
            return Err((
                "limit",
                format!("{} is out of range 1..={MAX_CONCURRENCY_LIMIT}", self.limit),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(key: &str, limit: u32) -> Concurrency {
        Concurrency {
            key: key.to_owned(),
            limit,
        }
    }

    #[test]
    fn bounds_are_checked_and_name_the_field() {
        assert!(of("model-api", 1).check().is_ok());
        assert!(of(&"k".repeat(128), 10_000).check().is_ok());
        assert_eq!(of("", 1).check().unwrap_err().0, "key");
        assert_eq!(of(&"k".repeat(129), 1).check().unwrap_err().0, "key");
        assert_eq!(of("a\nb", 1).check().unwrap_err().0, "key");
        assert_eq!(of("k", 0).check().unwrap_err().0, "limit");
        assert_eq!(of("k", 10_001).check().unwrap_err().0, "limit");
    }
}
