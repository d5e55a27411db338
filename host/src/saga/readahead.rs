//! Reads a batch will likely make, taken in one query before its calls run. A step's
//! keys usually name the order (`payment/<order id>`, `order/<order id>`): the keys the
//! last calls of an event kind read, with their event's order id in them, are templates,
//! and a batch reads up front what they give for its own orders. Without this each such
//! read is a round trip of its own, several per order.
//!
//! A wrong guess costs a row looked up in that query, nothing more: a key read ahead
//! counts as read only once a call reads it (`BatchState::read_ahead`), so the commit
//! checks, and can conflict on, only what the calls read. A store that reads key by key
//! anyway (SQL Server) reads nothing ahead: there a wrong guess would cost a round trip.

use parking_lot::Mutex;
use std::collections::HashMap;
use wasaga_sdk::recording::HostCall;

/// Event kinds a step keeps templates for: a step observing `*` meets any kind.
const MAX_KINDS: usize = 64;
/// Templates per kind: a call reading many keys of its order is guessed for its first few.
const MAX_PER_KIND: usize = 4;
/// Shorter order ids could sit in a key by chance (`1` in `sku/10`).
const MIN_ORDER_ID: usize = 8;

/// A key with the order id taken out: `prefix` + order id + `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    prefix: String,
    suffix: String,
}

/// Per step: the templates of each event kind, and those the batch in hand learns.
#[derive(Default)]
pub(super) struct ReadAhead {
    templates: Mutex<HashMap<String, Vec<Template>>>,
    learning: Mutex<HashMap<String, Vec<Template>>>,
}

impl ReadAhead {
    /// The keys to read ahead for a batch of (kind, order id) deliveries.
    pub(super) fn keys<'a>(&self, deliveries: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
        let templates = self.templates.lock();
        let mut keys: Vec<String> = deliveries
            .filter(|(_, order_id)| order_id.len() >= MIN_ORDER_ID)
            .filter_map(|(kind, order_id)| Some((templates.get(kind)?, order_id)))
            .flat_map(|(kinds, order_id)| kinds.iter().map(move |t| format!("{}{order_id}{}", t.prefix, t.suffix)))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Note what a call for an event of `kind` and `order_id` read.
    pub(super) fn learn(&self, kind: &str, order_id: &str, calls: &[HostCall]) {
        if order_id.len() < MIN_ORDER_ID {
            return;
        }
        let mut learning = self.learning.lock();
        if !learning.contains_key(kind) && learning.len() >= MAX_KINDS {
            return;
        }
        let found = learning.entry(kind.to_owned()).or_default();
        for call in calls {
            let HostCall::StateGet { key, .. } = call else { continue };
            let Some((prefix, suffix)) = key.split_once(order_id) else { continue };
            let template = Template { prefix: prefix.to_owned(), suffix: suffix.to_owned() };
            if found.len() < MAX_PER_KIND && !found.contains(&template) {
                found.push(template);
            }
        }
    }

    /// The batch is done: the kinds it called for are guessed from its calls from now
    /// on (a new version's keys replace the last one's), the others as before.
    pub(super) fn finish(&self) {
        let learned = std::mem::take(&mut *self.learning.lock());
        let mut templates = self.templates.lock();
        for (kind, found) in learned {
            if templates.contains_key(&kind) || templates.len() < MAX_KINDS {
                templates.insert(kind, found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::StepState;
    use crate::saga::state::BatchState;
    use crate::store::{BatchCommit, Store, StoreError, StoreOptions};
    use std::sync::Arc;
    use wasaga_sdk::recording::Bytes;

    /// Commit `value` as payment's `key`, as another host would.
    async fn set(store: &Arc<dyn Store>, key: &str, value: &str) {
        let seen = store.state_get("payment", key).await.expect("read").map(|v| v.version);
        let commit = BatchCommit {
            consumer: "payment".into(),
            state: vec![(key.into(), Some(value.into()))],
            state_reads: vec![(key.into(), seen)],
            ..BatchCommit::default()
        };
        store.commit_batch(&commit).await.expect("commit");
    }

    /// A batch of one call that read `read` and wrote `written`, committed.
    async fn commit(store: &Arc<dyn Store>, state: &Arc<BatchState>, read: &str) -> Result<(), StoreError> {
        let call = state.call();
        call.get(read).await.expect("get");
        call.put(read, b"mine".to_vec()).await.expect("put");
        state.keep(&call);
        let commit = BatchCommit {
            consumer: "payment".into(),
            state: state.take_writes(),
            state_reads: state.reads(),
            ..BatchCommit::default()
        };
        store.commit_batch(&commit).await
    }

    #[tokio::test]
    async fn a_key_read_ahead_is_checked_at_commit_only_once_a_call_read_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ahead.db").display());
        let store = crate::store::open(&url, &StoreOptions::default()).await.expect("store");
        set(&store, "payment/ord-00000001", "old").await;
        let keys = ["payment/ord-00000001".to_owned(), "payment/ord-00000002".to_owned()];

        // Read ahead, then another host changes a key no call of the batch reads: no conflict.
        let state = BatchState::new(store.clone(), "payment");
        state.read_ahead(&keys).await.expect("read ahead");
        set(&store, "payment/ord-00000001", "theirs").await;
        commit(&store, &state, "payment/ord-00000002").await.expect("the guess that was not read is not checked");

        // Read ahead, changed meanwhile, then read by a call: the commit sees the change.
        let state = BatchState::new(store.clone(), "payment");
        state.read_ahead(&keys).await.expect("read ahead");
        set(&store, "payment/ord-00000001", "theirs again").await;
        let call = state.call();
        assert_eq!(call.get("payment/ord-00000001").await.expect("get").as_deref(), Some(&b"theirs"[..]));
        let conflicted = commit(&store, &state, "payment/ord-00000001").await;
        assert!(matches!(conflicted, Err(StoreError::Conflict(_))), "{conflicted:?}");
        let now = store.state_get("payment", "payment/ord-00000001").await.expect("read").expect("present");
        assert_eq!(now.value, b"theirs again", "nothing of the stale batch was written");
    }

    fn get(key: &str) -> HostCall {
        HostCall::StateGet { key: key.into(), value: Some(Bytes(b"1".to_vec())) }
    }

    #[test]
    fn keys_naming_the_order_are_guessed_for_the_next_batch_of_that_kind() {
        let ahead = ReadAhead::default();
        assert!(ahead.keys([("order.placed", "ord-00000001")].into_iter()).is_empty(), "nothing learned yet");
        ahead.learn(
            "order.placed",
            "ord-00000001",
            &[get("order/ord-00000001"), get("sku/A"), get("x/ord-00000001/y")],
        );
        ahead.learn("stock.reserved", "ord-00000001", &[get("sku/B")]);
        ahead.finish();
        assert_eq!(
            ahead.keys([("order.placed", "ord-00000002"), ("stock.reserved", "ord-00000002")].into_iter()),
            vec!["order/ord-00000002".to_owned(), "x/ord-00000002/y".to_owned()],
            "only keys with the order id in them, for their own kind"
        );
        assert!(ahead.keys([("order.placed", "short")].into_iter()).is_empty(), "a short order id is never guessed");

        // A batch calling for the kind again replaces its templates (a new version's keys).
        ahead.learn("order.placed", "ord-00000003", &[get("v2/ord-00000003")]);
        ahead.finish();
        assert_eq!(ahead.keys([("order.placed", "ord-00000004")].into_iter()), vec!["v2/ord-00000004".to_owned()]);
        // A batch without that kind leaves them.
        ahead.learn("order.completed", "ord-00000005", &[]);
        ahead.finish();
        assert_eq!(ahead.keys([("order.placed", "ord-00000006")].into_iter()), vec!["v2/ord-00000006".to_owned()]);
    }

    #[test]
    fn an_order_id_chosen_by_a_sender_guesses_no_more_than_four_keys_per_event() {
        // A webhook's sender picks the order id: one that is also a common key prefix,
        // and very long ones, still give at most four guesses per event, in the step's
        // own state, each with that event's own order id.
        let ahead = ReadAhead::default();
        let crafted = "payment/";
        let calls: Vec<HostCall> = (0..50).map(|i| get(&format!("payment/{i}/payment/"))).collect();
        ahead.learn("payment.hook", crafted, &calls);
        ahead.finish();
        let long = "x".repeat(10_000);
        let keys = ahead.keys([("payment.hook", long.as_str())].into_iter());
        assert_eq!(keys.len(), MAX_PER_KIND, "{}", keys.len());
        assert!(keys.iter().all(|k| k.contains(&long)), "every guess names the event's own order id");
    }

    #[test]
    fn a_step_cannot_make_the_guesses_grow_without_bound() {
        let ahead = ReadAhead::default();
        let order = "ord-00000001";
        for kind in 0..200 {
            let calls: Vec<HostCall> = (0..100).map(|i| get(&format!("{kind}/{i}/{order}"))).collect();
            ahead.learn(&format!("kind.{kind}"), order, &calls);
        }
        ahead.finish();
        let kinds: Vec<String> = (0..200).map(|k| format!("kind.{k}")).collect();
        let keys = ahead.keys(kinds.iter().map(|k| (k.as_str(), "ord-00000002")));
        assert_eq!(keys.len(), MAX_KINDS * MAX_PER_KIND);
    }
}
