//! Calls kept for the next run of a batch. A batch that conflicts runs again on fresh
//! state, but in a fleet the conflict is usually one key of a few deliveries (two hosts
//! reserved the same SKU): a step is a function of the event, its attempt and what its
//! state reads answer, so a call whose every read answers the same again would return
//! the same. Such a call is not run again: its writes and events are taken as they were.
//! Only calls that touched nothing but state and the log are kept; a call that sent a
//! request or wrote to the archive runs again, as before.

use super::state::{BatchState, CallState};
use crate::runtime::{Emitted, StepState};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use wasaga_sdk::recording::HostCall;

/// A successful call's host calls and result.
#[derive(Clone)]
pub(super) struct Kept {
    digest: String,
    attempt: u32,
    pub(super) calls: Vec<HostCall>,
    pub(super) emits: Vec<Emitted>,
    pub(super) settings: Vec<(String, String)>,
}

/// The calls of the batch before, and of the batch in hand, by event id.
#[derive(Default)]
pub(super) struct Memo {
    previous: Mutex<HashMap<String, Kept>>,
    current: Mutex<HashMap<String, Kept>>,
}

impl Memo {
    /// A batch starts: what the last run kept may serve this one (a re-run after a
    /// conflict), and nothing older.
    pub(super) fn start(&self) {
        let mut current = self.current.lock();
        *self.previous.lock() = std::mem::take(&mut *current);
    }

    /// The keys the last run's calls of `event_ids` read: this run reads them again.
    pub(super) fn keys_read<'a>(&self, event_ids: impl Iterator<Item = &'a str>) -> Vec<String> {
        let previous = self.previous.lock();
        let mut keys: Vec<String> = event_ids
            .filter_map(|id| previous.get(id))
            .flat_map(|kept| kept.calls.iter())
            .filter_map(|call| match call {
                HostCall::StateGet { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Keep a successful call for the next run, if it can be taken again without
    /// running it: a full record of state and log calls only.
    pub(super) fn keep(
        &self,
        event_id: &str,
        (digest, attempt): (&str, u32),
        (calls, truncated): (&[HostCall], bool),
        emits: &[Emitted],
        settings: Vec<(String, String)>,
    ) {
        let pure = calls.iter().all(|call| {
            matches!(
                call,
                HostCall::StateGet { .. }
                    | HostCall::StatePut { .. }
                    | HostCall::StateDelete { .. }
                    | HostCall::Log { .. }
            )
        });
        if truncated || !pure {
            return;
        }
        let kept = Kept { digest: digest.to_owned(), attempt, calls: calls.to_vec(), emits: emits.to_vec(), settings };
        self.current.lock().insert(event_id.to_owned(), kept);
    }

    /// The last run's call of `event_id` by this version at this attempt, replayed on
    /// `state`: its view with the call's writes, when every read answers as it did.
    /// Taken again, it is kept for the next run too: a batch may conflict more than once.
    pub(super) async fn replay(
        &self,
        event_id: &str,
        (digest, attempt): (&str, u32),
        state: &Arc<BatchState>,
    ) -> Option<(Arc<CallState>, Kept)> {
        let kept = self.previous.lock().remove(event_id).filter(|k| k.digest == digest && k.attempt == attempt)?;
        // A view of its own: if a read answers otherwise, its writes so far are dropped.
        let view = state.call();
        for call in &kept.calls {
            match call {
                HostCall::StateGet { key, value } => {
                    let now = view.get(key).await.ok()?;
                    if now.as_deref() != value.as_ref().map(|v| v.0.as_slice()) {
                        return None;
                    }
                }
                HostCall::StatePut { key, value } => view.put(key, value.0.clone()).await.ok()?,
                HostCall::StateDelete { key } => view.delete(key).await.ok()?,
                HostCall::Log { .. } => {}
                _ => return None,
            }
        }
        self.current.lock().insert(event_id.to_owned(), kept.clone());
        Some((view, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchCommit, Store, StoreOptions};
    use wasaga_sdk::recording::Bytes;

    fn reserve(stock_before: &str, stock_after: &str) -> Vec<HostCall> {
        vec![
            HostCall::StateGet { key: "stock/A".into(), value: Some(Bytes(stock_before.into())) },
            HostCall::StatePut { key: "stock/A".into(), value: Bytes(stock_after.into()) },
        ]
    }

    /// Commit `value` as inventory's `stock/A`, as another host would.
    async fn set(store: &Arc<dyn Store>, value: &str) {
        let seen = store.state_get("inventory", "stock/A").await.expect("read").map(|v| v.version);
        let commit = BatchCommit {
            consumer: "inventory".into(),
            state: vec![("stock/A".into(), Some(value.into()))],
            state_reads: vec![("stock/A".into(), seen)],
            ..BatchCommit::default()
        };
        store.commit_batch(&commit).await.expect("commit");
    }

    #[tokio::test]
    async fn a_call_is_taken_again_only_while_its_reads_answer_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("memo.db").display());
        let store = crate::store::open(&url, &StoreOptions::default()).await.expect("store");
        set(&store, "5").await;
        let memo = Memo::default();
        let emits = vec![Emitted { kind: "stock.reserved".into(), payload: "{}".into(), delay_ms: None }];
        memo.keep("e1", ("sha256:a", 1), (&reserve("5", "4"), false), &emits, Vec::new());
        memo.keep("e2", ("sha256:a", 1), (&reserve("5", "4"), true), &emits, Vec::new());
        memo.start();
        assert_eq!(memo.keys_read(["e1", "e2"].into_iter()), vec!["stock/A".to_owned()]);

        // Another host took a unit meanwhile: the read answers 4, so e1 runs again.
        set(&store, "4").await;
        let state = BatchState::new(store.clone(), "inventory");
        assert!(memo.replay("e1", ("sha256:a", 1), &state).await.is_none());
        assert!(memo.replay("e2", ("sha256:a", 1), &state).await.is_none(), "a truncated record is never kept");

        memo.keep("e1", ("sha256:a", 1), (&reserve("4", "3"), false), &emits, Vec::new());
        memo.start();
        let state = BatchState::new(store.clone(), "inventory");
        assert!(memo.replay("e1", ("sha256:b", 1), &state).await.is_none(), "another version runs itself");
        memo.keep("e1", ("sha256:a", 2), (&reserve("4", "3"), false), &emits, Vec::new());
        memo.start();
        assert!(memo.replay("e1", ("sha256:a", 1), &state).await.is_none(), "another attempt runs itself");

        // Unchanged: taken again, with its write.
        memo.keep("e1", ("sha256:a", 1), (&reserve("4", "3"), false), &emits, Vec::new());
        memo.start();
        let (view, kept) = memo.replay("e1", ("sha256:a", 1), &state).await.expect("reads answer the same");
        assert_eq!(kept.emits, emits);
        assert_eq!(view.get("stock/A").await.expect("get").as_deref(), Some(&b"3"[..]));
        // The batch conflicts again (on another of its keys): the call is still not run again.
        memo.start();
        assert_eq!(memo.keys_read(["e1"].into_iter()), vec!["stock/A".to_owned()]);
        let state = BatchState::new(store.clone(), "inventory");
        assert!(memo.replay("e1", ("sha256:a", 1), &state).await.is_some(), "taken again in a third run");
    }
}
