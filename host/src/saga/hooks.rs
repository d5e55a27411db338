//! Webhooks as events: a verified callback for a step becomes the event `<step>.hook` of
//! the order it names, in the host store's outbox, and reaches the step like any event.
//! The event id is derived from the step and the delivery id, so the same delivery sent
//! again is stored once (the outbox's unique event id refuses the second).

use super::SagaContext;
use crate::store::StoreError;

/// A step's webhook settings (`[steps.NAME] hook_secret`, `hook_order_id`).
#[derive(Clone)]
pub struct Hook {
    pub secret: secrecy::SecretString,
    /// JSON pointer to the order id in the body.
    pub order_id: String,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("order_id", &self.order_id).finish_non_exhaustive()
    }
}

/// Namespace of the ids of webhook events (UUID v5 of `<step>/<delivery id>`).
const HOOK_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x5f0e_7a1c_3b2d_4e6f_8a9b_0c1d_2e3f_4a5b);

/// What storing a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub event_id: String,
    /// The delivery was stored before; nothing changed.
    pub duplicate: bool,
}

/// The event id of `step`'s webhook `delivery`.
pub fn event_id(step: &str, delivery: &str) -> String {
    uuid::Uuid::new_v5(&HOOK_IDS, format!("{step}/{delivery}").as_bytes()).to_string()
}

/// Store webhook `delivery` for `step` as `<step>.hook` of `order_id`: the payload is
/// `{"delivery_id", "body"}`.
pub async fn store(
    ctx: &SagaContext,
    step: &str,
    delivery: &str,
    order_id: &str,
    body: serde_json::Value,
) -> Result<Stored, StoreError> {
    let payload = serde_json::json!({ "delivery_id": delivery, "body": body }).to_string();
    let mut event = SagaContext::host_event(&format!("{step}.hook"), order_id, payload);
    event.id = event_id(step, delivery);
    let span = tracing::info_span!("hook", host = %ctx.host_id, order_id = %order_id, event_id = %event.id, %step);
    match ctx.host_store().emit(&event).await {
        Ok(()) => {
            metrics::counter!("wasaga_webhooks_total", "step" => step.to_owned(), "outcome" => "stored").increment(1);
            span.in_scope(|| tracing::info!("webhook stored"));
            ctx.relay.notify();
            Ok(Stored { event_id: event.id, duplicate: false })
        }
        Err(StoreError::Rejected(reason)) => {
            // A unique-key refusal: stored before, if the order's events hold it.
            let stored = ctx.host_store().timelines(&[order_id.to_owned()]).await?;
            if !stored.iter().any(|row| row.event_id == event.id) {
                return Err(StoreError::Rejected(reason));
            }
            metrics::counter!("wasaga_webhooks_total", "step" => step.to_owned(), "outcome" => "duplicate")
                .increment(1);
            Ok(Stored { event_id: event.id, duplicate: true })
        }
        Err(error) => Err(error),
    }
}
