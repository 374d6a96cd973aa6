//! Task and attempt ids: 128-bit, time-ordered, unique across nodes, in 26 characters.

use std::fmt;
use std::sync::Mutex;

use time::OffsetDateTime;

/// Crockford's base32 alphabet: sorts like the numbers it encodes, no ambiguous letters.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The last id handed out by this process: `(millisecond, 80 random bits)`, so that ids
/// made within one millisecond still sort in the order they were made.
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

const RANDOM_BITS: u32 = 80;
const RANDOM_MASK: u128 = (1 << RANDOM_BITS) - 1;

/// A fresh 128-bit id: 48 bits of milliseconds since the Unix epoch, then 80 bits that are
/// random for the first id of a millisecond and count up for later ones in this process.
/// Encoded in 26 Crockford base32 characters, so text order is creation order.
fn generate(at: OffsetDateTime) -> String {
    let millis = (at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u64;
    let random = {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = if last.0 == millis && last.1 < RANDOM_MASK {
            last.1 + 1
        } else {
            // A fresh start leaves the top random bit clear, room to count up.
            rand::random::<u128>() & (RANDOM_MASK >> 1)
        };
        *last = (millis, next);
        next
    };
    let value = (u128::from(millis) << RANDOM_BITS) | random;
    (0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (i * 5)) & 31) as usize]))
        .collect()
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh id whose time part is `at` (ids sort by it).
            pub fn generate(at: OffsetDateTime) -> Self {
                Self(generate(at))
            }

            /// The text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text form, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        /// Any text is accepted: an id that was never generated is simply not found.
        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_string())
            }
        }
    };
}

text_id!(
    /// A task's id. Unique across nodes and sortable by creation time.
    TaskId
);
text_id!(
    /// An attempt's id: the fencing token of a claim. Only the attempt that holds a task may
    /// heartbeat or complete it.
    AttemptId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_by_order_within_a_millisecond() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let t1 = t0 + time::Duration::milliseconds(1);
        let a = TaskId::generate(t0);
        let b = TaskId::generate(t0);
        let c = TaskId::generate(t1);
        assert_eq!(a.as_str().len(), 26);
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn ids_are_unique() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut ids: Vec<_> = (0..10_000).map(|_| TaskId::generate(t0)).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
    }
}
