//! Per-attempt resource accounting: memory across all of an instance's memories, table
//! elements, instance counts; records the peak and which limit was hit.

use wasmtime::ResourceLimiter;

/// Why growth was refused; the attempt ends `memory_limit` with this as its error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LimitExceeded(pub String);

/// Tracks what one attempt holds and traps on any growth past its limits.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_limit: u64,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    memory_held: u64,
    pub peak_memory: u64,
    pub exceeded: Option<LimitExceeded>,
}

impl Limiter {
    pub fn new(memory_limit: u64, config: &crate::SandboxConfig) -> Self {
        Self {
            memory_limit,
            table_elements: config.max_table_elements as usize,
            instances: config.max_instances as usize,
            tables: config.max_tables as usize,
            memories: config.max_memories as usize,
            memory_held: 0,
            peak_memory: 0,
            exceeded: None,
        }
    }

    fn refuse(&mut self, why: String) -> wasmtime::Result<bool> {
        let err = LimitExceeded(why);
        self.exceeded = Some(err.clone());
        Err(wasmtime::Error::new(err))
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let held = self.memory_held.saturating_add(growth);
        if held > self.memory_limit {
            return self.refuse(format!(
                "memory limit: the instance asked for {held} bytes in all, over its limit of {} bytes",
                self.memory_limit
            ));
        }
        if let Some(max) = maximum.filter(|max| desired > *max) {
            return self.refuse(format!(
                "memory limit: a memory asked to grow to {desired} bytes, over its maximum of {max} bytes"
            ));
        }
        self.memory_held = held;
        self.peak_memory = self.peak_memory.max(held);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.exceeded = Some(LimitExceeded(format!(
            "memory limit: growth failed: {error:#}"
        )));
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let max = maximum.map_or(self.table_elements, |m| m.min(self.table_elements));
        if desired > max {
            return self.refuse(format!(
                "table limit: a table asked for {desired} elements, over the limit of {max}"
            ));
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.exceeded = Some(LimitExceeded(format!(
            "table limit: growth failed: {error:#}"
        )));
        Err(error)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u64) -> Limiter {
        Limiter::new(limit, &crate::SandboxConfig::default())
    }

    #[test]
    fn memory_is_limited_across_all_memories() {
        let mut l = limiter(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(0, 30, None).unwrap());
        assert!(
            l.memory_growing(0, 20, None).is_err(),
            "110 bytes in all must be refused"
        );
        assert!(l.exceeded.is_some());
        assert_eq!(l.peak_memory, 90);
    }

    #[test]
    fn growth_past_a_declared_maximum_is_a_limit_hit() {
        let mut l = limiter(1 << 30);
        assert!(l.memory_growing(65536, 131072, Some(65536)).is_err());
        assert!(l.exceeded.unwrap().0.contains("maximum"));
    }

    #[test]
    fn tables_are_limited_by_the_config() {
        let mut l = limiter(1 << 30);
        assert!(l.table_growing(0, 100, None).unwrap());
        let too_many = crate::SandboxConfig::DEFAULT_MAX_TABLE_ELEMENTS as usize + 1;
        assert!(l.table_growing(100, too_many, None).is_err());
    }
}
