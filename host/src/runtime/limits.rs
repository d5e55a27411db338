//! Per-call resource limits: a memory cap that also remembers it was hit, so a guest's
//! out-of-memory abort is reported as the limit it is rather than as a bare trap.

use wasmtime::ResourceLimiter;

/// Caps linear memory and table growth of one step instance.
#[derive(Debug, Clone)]
pub struct CallLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// Set when the guest asked for more memory than the cap.
    pub memory_limit_hit: bool,
}

impl CallLimiter {
    pub fn new(max_memory_bytes: usize) -> Self {
        CallLimiter { max_memory_bytes, max_table_elements: 100_000, memory_limit_hit: false }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}
