//! The randomness of the retry policy: the backoff is drawn with full jitter. The rules
//! themselves are `fabric_store::rules`, shared with the stores.

/// Full jitter: uniformly from `0..=bound`.
pub(crate) fn full_jitter(bound: u64) -> u64 {
    rand::random_range(0..=bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_its_bound() {
        for _ in 0..1000 {
            assert!(full_jitter(10) <= 10);
        }
        assert_eq!(full_jitter(0), 0);
    }
}
