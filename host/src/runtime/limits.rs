//! Per-call resource limits: a memory cap that also remembers it was hit (so a guest's
//! out-of-memory abort is reported as the limit it is rather than as a bare trap), and a
//! budget of everything a call makes the host hold: state written, archive objects, log
//! lines. A guest cannot make the host's memory follow its own.

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

/// What one call may make the host hold. Each limit names its setting, so a breach
/// tells the operator what to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Bytes of keys and values written to state (`WASAGA_STEP_MAX_STATE_BYTES`).
    pub state_bytes: usize,
    /// Distinct keys written or deleted (`WASAGA_STEP_MAX_STATE_KEYS`).
    pub state_keys: usize,
    /// Bytes of one state key.
    pub state_key_bytes: usize,
    /// State reads one call may make (`WASAGA_STEP_MAX_STATE_READS`).
    pub state_reads: usize,
    /// Bytes of state values one call may read (`WASAGA_STEP_MAX_STATE_READ_BYTES`).
    pub state_read_bytes: usize,
    /// Archive objects written (`WASAGA_STEP_MAX_ARCHIVE_OBJECTS`).
    pub archive_objects: usize,
    /// Bytes of archive objects written (`WASAGA_STEP_MAX_ARCHIVE_BYTES`).
    pub archive_bytes: usize,
    /// Log lines kept; more are dropped and counted (`WASAGA_STEP_MAX_LOG_LINES`).
    pub log_lines: usize,
    /// Bytes of one log line kept; longer lines are truncated.
    pub log_line_bytes: usize,
    /// Events one call may return.
    pub emits: usize,
    /// Payload bytes one call may return.
    pub emit_bytes: usize,
    /// Outbound HTTP requests one call may send (`WASAGA_STEP_MAX_HTTP_REQUESTS`).
    pub http_requests: usize,
    /// Bytes of one request body (`WASAGA_STEP_MAX_HTTP_REQUEST_BYTES`).
    pub http_request_bytes: usize,
    /// Bytes of one response body (`WASAGA_STEP_MAX_HTTP_RESPONSE_BYTES`).
    pub http_response_bytes: usize,
    /// The longest delay of a timer (`WASAGA_STEP_MAX_TIMER_SECS`).
    pub timer_delay_ms: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            state_bytes: 1024 * 1024,
            state_keys: 1000,
            state_key_bytes: 1024,
            state_reads: 10_000,
            state_read_bytes: 16 * 1024 * 1024,
            archive_objects: 100,
            archive_bytes: 8 * 1024 * 1024,
            log_lines: 100,
            log_line_bytes: 4096,
            emits: 1000,
            emit_bytes: 1024 * 1024,
            http_requests: 8,
            http_request_bytes: 1024 * 1024,
            http_response_bytes: 4 * 1024 * 1024,
            timer_delay_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// A limit a call went past; the call fails with it (retried, then dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} exceed the limit of {limit} per call ({setting})")]
pub struct LimitExceeded {
    pub what: &'static str,
    pub limit: usize,
    pub setting: &'static str,
}

/// What a call has used of its [`CallLimits`] so far.
#[derive(Debug, Default)]
pub struct CallBudget {
    limits: CallLimits,
    state_bytes: usize,
    state_keys: std::collections::HashSet<String>,
    state_reads: usize,
    state_read_bytes: usize,
    archive_objects: usize,
    archive_bytes: usize,
    pub log_lines: usize,
    /// Log lines dropped because the call wrote too many.
    pub log_dropped: usize,
}

impl CallBudget {
    pub fn new(limits: CallLimits) -> Self {
        CallBudget { limits, ..CallBudget::default() }
    }

    /// Account for a state write (`value` is `None` for a delete).
    pub fn state_write(&mut self, key: &str, value: Option<usize>) -> Result<(), LimitExceeded> {
        if key.len() > self.limits.state_key_bytes {
            return Err(LimitExceeded {
                what: "state key bytes",
                limit: self.limits.state_key_bytes,
                setting: "a state key is at most this long",
            });
        }
        if !self.state_keys.contains(key) {
            if self.state_keys.len() >= self.limits.state_keys {
                return Err(LimitExceeded {
                    what: "state keys written",
                    limit: self.limits.state_keys,
                    setting: "WASAGA_STEP_MAX_STATE_KEYS",
                });
            }
            self.state_keys.insert(key.to_owned());
        }
        self.state_bytes = self.state_bytes.saturating_add(key.len() + value.unwrap_or(0));
        if self.state_bytes > self.limits.state_bytes {
            return Err(LimitExceeded {
                what: "state bytes written",
                limit: self.limits.state_bytes,
                setting: "WASAGA_STEP_MAX_STATE_BYTES",
            });
        }
        Ok(())
    }

    /// Account for a state read of `key`, before it is made.
    pub fn state_read_key(&mut self, key: &str) -> Result<(), LimitExceeded> {
        if key.len() > self.limits.state_key_bytes {
            return Err(LimitExceeded {
                what: "state key bytes",
                limit: self.limits.state_key_bytes,
                setting: "a state key is at most this long",
            });
        }
        self.state_reads += 1;
        if self.state_reads > self.limits.state_reads {
            return Err(LimitExceeded {
                what: "state reads",
                limit: self.limits.state_reads,
                setting: "WASAGA_STEP_MAX_STATE_READS",
            });
        }
        Ok(())
    }

    /// Account for `bytes` of a value read.
    pub fn state_read_bytes(&mut self, bytes: usize) -> Result<(), LimitExceeded> {
        self.state_read_bytes = self.state_read_bytes.saturating_add(bytes);
        if self.state_read_bytes > self.limits.state_read_bytes {
            return Err(LimitExceeded {
                what: "state bytes read",
                limit: self.limits.state_read_bytes,
                setting: "WASAGA_STEP_MAX_STATE_READ_BYTES",
            });
        }
        Ok(())
    }

    /// Account for an archive object of `bytes`.
    pub fn archive_put(&mut self, bytes: usize) -> Result<(), LimitExceeded> {
        self.archive_objects += 1;
        if self.archive_objects > self.limits.archive_objects {
            return Err(LimitExceeded {
                what: "archive objects",
                limit: self.limits.archive_objects,
                setting: "WASAGA_STEP_MAX_ARCHIVE_OBJECTS",
            });
        }
        self.archive_bytes = self.archive_bytes.saturating_add(bytes);
        if self.archive_bytes > self.limits.archive_bytes {
            return Err(LimitExceeded {
                what: "archive bytes",
                limit: self.limits.archive_bytes,
                setting: "WASAGA_STEP_MAX_ARCHIVE_BYTES",
            });
        }
        Ok(())
    }

    /// Whether another log line may be kept, and how long it may be; a line over the
    /// count is dropped and counted.
    pub fn log_line(&mut self) -> Option<usize> {
        if self.log_lines >= self.limits.log_lines {
            self.log_dropped += 1;
            return None;
        }
        self.log_lines += 1;
        Some(self.limits.log_line_bytes)
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… [{} bytes truncated]", &text[..end], text.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_writes_are_bounded_by_bytes_and_keys() {
        let limits = CallLimits { state_bytes: 100, state_keys: 2, ..CallLimits::default() };
        let mut budget = CallBudget::new(limits);
        assert!(budget.state_write("a", Some(40)).is_ok());
        assert!(budget.state_write("a", Some(40)).is_ok(), "the same key again is not a new key");
        let error = budget.state_write("b", Some(40)).expect_err("over 100 bytes");
        assert!(error.to_string().contains("WASAGA_STEP_MAX_STATE_BYTES"), "{error}");
        let mut budget = CallBudget::new(limits);
        budget.state_write("a", None).expect("delete");
        budget.state_write("b", None).expect("delete");
        let error = budget.state_write("c", None).expect_err("a third key");
        assert!(error.to_string().contains("WASAGA_STEP_MAX_STATE_KEYS"), "{error}");
    }

    #[test]
    fn state_reads_are_bounded_by_count_bytes_and_key_size() {
        let limits = CallLimits { state_reads: 2, state_read_bytes: 10, state_key_bytes: 4, ..CallLimits::default() };
        let mut budget = CallBudget::new(limits);
        assert!(budget.state_read_key("toolong").is_err());
        budget.state_read_key("a").expect("first");
        budget.state_read_bytes(6).expect("6 bytes");
        let error = budget.state_read_bytes(6).expect_err("over 10 bytes");
        assert!(error.to_string().contains("WASAGA_STEP_MAX_STATE_READ_BYTES"), "{error}");
        budget.state_read_key("b").expect("second");
        let error = budget.state_read_key("c").expect_err("a third read");
        assert!(error.to_string().contains("WASAGA_STEP_MAX_STATE_READS"), "{error}");
    }

    #[test]
    fn archive_and_log_are_bounded() {
        let limits = CallLimits { archive_objects: 1, archive_bytes: 10, log_lines: 1, ..CallLimits::default() };
        let mut budget = CallBudget::new(limits);
        budget.archive_put(5).expect("first object");
        assert!(budget.archive_put(1).is_err(), "a second object");
        assert!(budget.log_line().is_some());
        assert!(budget.log_line().is_none());
        assert_eq!(budget.log_dropped, 1);
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 3);
        assert!(cut.starts_with('é') && cut.contains("truncated"), "{cut}");
    }
}
