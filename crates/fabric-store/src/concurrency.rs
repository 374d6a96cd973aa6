//! The rule of concurrency keys, in one place for every backend: a task with a key starts
//! only while fewer than its `limit` tasks of its tenant with that key are running.

use std::collections::{BTreeSet, HashMap};

use fabric_types::Concurrency;

use crate::StoreError;

/// Refuses a concurrency key or limit out of bounds (see [`Concurrency::check`]); the
/// message names `tasks[index].concurrency.<field>`.
pub fn check_concurrency(
    index: usize,
    concurrency: Option<&Concurrency>,
) -> Result<(), StoreError> {
    match concurrency.map(Concurrency::check) {
        Some(Err((field, why))) => Err(StoreError::InvalidArgument(format!(
            "tasks[{index}].concurrency.{field}: {why}"
        ))),
        _ => Ok(()),
    }
}

/// A tenant and a concurrency key.
pub type KeyOf = (String, String);

/// What runs under each concurrency key during one claim: the counts read from the store
/// (under whatever makes them exact for the backend) plus the tasks this claim started,
/// and the keys found full, which the claim's next queries pass over.
#[derive(Debug, Default, Clone)]
pub struct KeyCounts {
    running: HashMap<KeyOf, u64>,
    full: BTreeSet<KeyOf>,
}

impl KeyCounts {
    /// Whether the running count of `(tenant, key)` is known yet.
    pub fn knows(&self, tenant: &str, key: &str) -> bool {
        self.running
            .contains_key(&(tenant.to_owned(), key.to_owned()))
    }

    /// Records how many tasks of `(tenant, key)` the store has running.
    pub fn set(&mut self, tenant: &str, key: &str, running: u64) {
        self.running
            .insert((tenant.to_owned(), key.to_owned()), running);
    }

    /// Whether a task of `tenant` with `key` and `limit` may start: when fewer than `limit`
    /// run, it is counted as running and `true`; otherwise the key is marked full. An
    /// unknown count reads as zero (set it first).
    pub fn take(&mut self, tenant: &str, key: &str, limit: u32) -> bool {
        let id = (tenant.to_owned(), key.to_owned());
        let running = self.running.entry(id.clone()).or_insert(0);
        if *running < u64::from(limit) {
            *running += 1;
            true
        } else {
            self.full.insert(id);
            false
        }
    }

    /// The keys a task was held back for, which the claim's later queries skip.
    pub fn full(&self) -> &BTreeSet<KeyOf> {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_takes_up_to_its_limit_then_is_full() {
        let mut counts = KeyCounts::default();
        counts.set("acme", "api", 1);
        assert!(counts.take("acme", "api", 3));
        assert!(counts.take("acme", "api", 3));
        assert!(!counts.take("acme", "api", 3));
        assert!(counts.full().contains(&("acme".into(), "api".into())));
        // Another tenant's key of the same name is its own.
        assert!(counts.take("globex", "api", 1));
        assert!(!counts.take("globex", "api", 1));
        // A task with a higher limit of a key at another's limit may still start.
        assert!(counts.take("acme", "api", 4));
    }

    #[test]
    fn bad_bounds_name_the_field() {
        let bad = Concurrency {
            key: String::new(),
            limit: 1,
        };
        let err = check_concurrency(3, Some(&bad)).unwrap_err().to_string();
        assert!(err.contains("tasks[3].concurrency.key"), "{err}");
        assert!(check_concurrency(0, None).is_ok());
    }
}
