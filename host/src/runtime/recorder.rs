//! Records every host call a step makes during one call, in order, with its answer:
//! the material of a dead letter's recording, a shadow's comparison and a replay. The
//! record is bounded in bytes; past the bound it stops and says it was truncated.

use parking_lot::Mutex;
use std::sync::Arc;
use wasaga_sdk::recording::HostCall;

/// One call's host calls.
#[derive(Debug)]
pub struct Recorder {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<HostCall>,
    bytes: usize,
    truncated: bool,
}

impl Recorder {
    /// A recorder keeping at most about `max_bytes` of calls.
    pub fn new(max_bytes: usize) -> Arc<Recorder> {
        Arc::new(Recorder { max_bytes, inner: Mutex::new(Inner::default()) })
    }

    pub(super) fn record(&self, call: HostCall) {
        let size = approximate_size(&call);
        let mut inner = self.inner.lock();
        if inner.truncated {
            return;
        }
        if inner.bytes.saturating_add(size) > self.max_bytes {
            inner.truncated = true;
            return;
        }
        inner.bytes += size;
        inner.calls.push(call);
    }

    /// The calls recorded, and whether the record was cut short.
    pub fn take(&self) -> (Vec<HostCall>, bool) {
        let mut inner = self.inner.lock();
        (std::mem::take(&mut inner.calls), inner.truncated)
    }
}

fn approximate_size(call: &HostCall) -> usize {
    let bytes = |b: &wasaga_sdk::recording::Bytes| b.0.len();
    32 + match call {
        HostCall::StateGet { key, value } => key.len() + value.as_ref().map_or(0, bytes),
        HostCall::StatePut { key, value } => key.len() + bytes(value),
        HostCall::StateDelete { key } => key.len(),
        HostCall::ArchivePut { name, content_type, error, .. } => {
            name.len() + content_type.len() + error.as_ref().map_or(0, String::len)
        }
        HostCall::Log { level, message } => level.len() + message.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_past_its_bound_is_cut_and_says_so() {
        let recorder = Recorder::new(200);
        for i in 0..10 {
            recorder.record(HostCall::StateDelete { key: format!("key-{i}-{}", "x".repeat(20)) });
        }
        let (calls, truncated) = recorder.take();
        assert!(truncated);
        assert!(!calls.is_empty() && calls.len() < 10, "{} calls kept", calls.len());
    }
}
