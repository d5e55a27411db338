//! Shadow runs: a candidate version handles the same events as the serving version,
//! from the same state the serving call read, after the live batch committed; its
//! writes and emits are discarded and compared with the live ones. Jobs wait in a
//! bounded queue that drops (and counts) when full, so a shadow never slows the saga.

use crate::event::StoredEvent;
use crate::runtime::{CallInput, LoadedStep, MemoryState, Network, Origin, Recorder, StepExecutor, StepState};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use wasaga_sdk::recording::HostCall;

/// Jobs waiting for the shadow worker.
const QUEUE: usize = 1024;
/// Differences kept as samples per step.
const SAMPLES: usize = 20;
/// Bytes one shadow call's recording may hold.
const RECORDING_BYTES: usize = 256 * 1024;

/// What the live call did, to compare the shadow's with.
#[derive(Debug, Clone)]
pub struct LiveResult {
    /// `ok` or the failure's label.
    pub outcome: String,
    pub emits: Vec<(String, String)>,
    /// Key → value written (`None`: deleted), last write wins.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
}

/// One event to run on a shadow candidate.
pub struct ShadowJob {
    pub candidate: Arc<LoadedStep>,
    pub event: StoredEvent,
    pub attempt: u32,
    /// The state the live call read, by key (`None`: absent).
    pub reads: BTreeMap<String, Option<Vec<u8>>>,
    /// The live call's HTTP exchanges: the shadow's requests are answered from them.
    pub exchanges: Vec<HostCall>,
    pub live: LiveResult,
}

/// The comparison so far, per step.
#[derive(Debug, Clone, Default)]
struct Report {
    digest: String,
    calls: u64,
    same: u64,
    different: u64,
    failed: u64,
    dropped: u64,
    samples: VecDeque<Value>,
}

/// The shadow queue, its worker and the comparisons.
pub struct Shadows {
    tx: mpsc::Sender<ShadowJob>,
    reports: Arc<Mutex<HashMap<String, Report>>>,
}

impl Shadows {
    /// Start the worker, which runs jobs on `executor`.
    pub fn start(executor: Arc<dyn StepExecutor>) -> Arc<Shadows> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reports: Arc<Mutex<HashMap<String, Report>>> = Arc::default();
        tokio::spawn(work(rx, executor, reports.clone()));
        Arc::new(Shadows { tx, reports })
    }

    /// Queue a job; when the queue is full it is dropped and counted.
    pub fn submit(&self, job: ShadowJob) {
        let step = job.candidate.name.to_string();
        let digest = job.candidate.digest.to_string();
        if self.tx.try_send(job).is_err() {
            metrics::counter!("wasaga_shadow_dropped_total", "step" => step.clone()).increment(1);
            let mut reports = self.reports.lock();
            let report = report_for(&mut reports, &step, &digest);
            report.dropped += 1;
        }
    }

    /// `{"digest","calls","same","different","failed","dropped","samples"}` for `step`.
    pub fn report(&self, step: &str) -> Option<Value> {
        let reports = self.reports.lock();
        let r = reports.get(step)?;
        Some(json!({
            "digest": r.digest,
            "calls": r.calls,
            "same": r.same,
            "different": r.different,
            "failed": r.failed,
            "dropped": r.dropped,
            "samples": r.samples.iter().collect::<Vec<_>>(),
        }))
    }
}

fn report_for<'a>(reports: &'a mut HashMap<String, Report>, step: &str, digest: &str) -> &'a mut Report {
    let report = reports.entry(step.to_owned()).or_default();
    if report.digest != digest {
        // A new candidate starts a new comparison.
        *report = Report { digest: digest.to_owned(), ..Report::default() };
    }
    report
}

async fn work(
    mut rx: mpsc::Receiver<ShadowJob>,
    executor: Arc<dyn StepExecutor>,
    reports: Arc<Mutex<HashMap<String, Report>>>,
) {
    while let Some(job) = rx.recv().await {
        let state = Arc::new(MemoryState::default());
        for (key, value) in &job.reads {
            if let Some(value) = value {
                let _ = state.put(key, value.clone()).await;
            }
        }
        let event = &job.event;
        let origin = Origin::of(event);
        // A shadow never sends: its requests get the live call's answers, or fail.
        let input = CallInput::of(event, &origin, job.attempt)
            .network(Network::Recorded { calls: &job.exchanges, settings: None });
        let recorder = Recorder::new(RECORDING_BYTES);
        // No archive: a shadow's archive writes are discarded like its state writes.
        let result = executor.call(&job.candidate, input, state, None, Some(recorder.clone())).await;
        let (calls, _) = recorder.take();
        let shadow = LiveResult {
            outcome: match &result {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.label().to_owned(),
            },
            emits: result.map(|emits| emits.into_iter().map(|e| (e.kind, e.payload)).collect()).unwrap_or_default(),
            writes: writes_of(&calls),
        };
        let differences = compare(&job.live, &shadow);
        let step = job.candidate.name.to_string();
        let mut reports = reports.lock();
        let report = report_for(&mut reports, &step, &job.candidate.digest);
        report.calls += 1;
        if shadow.outcome != "ok" && job.live.outcome == "ok" {
            report.failed += 1;
        } else if differences.is_empty() {
            report.same += 1;
        } else {
            report.different += 1;
        }
        if !differences.is_empty() {
            if report.samples.len() == SAMPLES {
                report.samples.pop_front();
            }
            report.samples.push_back(json!({
                "event_id": event.id,
                "kind": event.kind,
                "order_id": event.order_id,
                "differences": differences,
            }));
        }
        metrics::counter!("wasaga_shadow_calls_total", "step" => step, "same" => differences.is_empty().to_string())
            .increment(1);
    }
}

/// The state writes in `calls`, last one per key.
pub fn writes_of(calls: &[HostCall]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut writes = BTreeMap::new();
    for call in calls {
        match call {
            HostCall::StatePut { key, value } => {
                writes.insert(key.clone(), Some(value.0.clone()));
            }
            HostCall::StateDelete { key } => {
                writes.insert(key.clone(), None);
            }
            _ => {}
        }
    }
    writes
}

/// The state reads in `calls`: the first value seen per key.
pub fn reads_of(calls: &[HostCall]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut reads = BTreeMap::new();
    for call in calls {
        if let HostCall::StateGet { key, value } = call {
            reads.entry(key.clone()).or_insert_with(|| value.as_ref().map(|v| v.0.clone()));
        }
    }
    reads
}

/// Where two results differ, as readable entries; JSON is compared as values.
fn compare(live: &LiveResult, shadow: &LiveResult) -> Vec<Value> {
    let mut differences = Vec::new();
    if live.outcome != shadow.outcome {
        differences.push(json!({"what": "outcome", "live": live.outcome, "shadow": shadow.outcome}));
    }
    let emits = |r: &LiveResult| -> Vec<Value> {
        r.emits.iter().map(|(kind, payload)| json!({"kind": kind, "payload": as_json(payload.as_bytes())})).collect()
    };
    let (live_emits, shadow_emits) = (emits(live), emits(shadow));
    if live_emits != shadow_emits {
        differences.push(json!({"what": "emits", "live": live_emits, "shadow": shadow_emits}));
    }
    let keys: std::collections::BTreeSet<&String> = live.writes.keys().chain(shadow.writes.keys()).collect();
    for key in keys {
        let value = |r: &LiveResult| r.writes.get(key).map(|v| v.as_deref().map_or(Value::Null, as_json));
        let (a, b) = (value(live), value(shadow));
        if a != b {
            differences.push(json!({"what": "state", "key": key, "live": a, "shadow": b}));
        }
    }
    differences
}

fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: &str, emits: &[(&str, &str)], writes: &[(&str, &str)]) -> LiveResult {
        LiveResult {
            outcome: outcome.to_owned(),
            emits: emits.iter().map(|(k, p)| ((*k).to_owned(), (*p).to_owned())).collect(),
            writes: writes.iter().map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec()))).collect(),
        }
    }

    #[test]
    fn json_is_compared_as_values_and_differences_are_named() {
        let live = result("ok", &[("payment.captured", r#"{"a":1,"b":2}"#)], &[("k", r#"{"x":1}"#)]);
        let reordered = result("ok", &[("payment.captured", r#"{"b":2,"a":1}"#)], &[("k", r#"{ "x": 1 }"#)]);
        assert!(compare(&live, &reordered).is_empty());
        let declined = result("ok", &[("payment.declined", "{}")], &[("k", r#"{"x":2}"#)]);
        let differences = compare(&live, &declined);
        let what: Vec<&str> = differences.iter().filter_map(|d| d["what"].as_str()).collect();
        assert_eq!(what, ["emits", "state"]);
    }
}
