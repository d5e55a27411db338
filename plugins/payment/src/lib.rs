//! The payment step: charges a reserved order through a card gateway and refunds the
//! charge when the order is cancelled.
//!
//! With the setting `WASAGA_GATEWAY_URL` (`[steps.payment.env]`) it calls that gateway
//! over HTTP (`POST /v1/charges`, `POST /v1/refunds`), as production does: the host adds
//! the idempotency key and the gateway's credentials. Without it, a gateway simulated
//! in-process answers. Either way the card token decides (the test cards of README.md,
//! "Orders"): `tok_ok` captures, `tok_decline` is declined, `tok_flaky_N` fails retryably
//! on its first N attempts and then captures, `tok_trap` traps every time; in-process,
//! anything else is declined as `unknown_token`.
//!
//! **3-D Secure** (`tok_3ds`, through a gateway only): the gateway answers 202
//! `requires_action` and confirms the charge later with a signed webhook, which the host
//! verifies and delivers as `payment.hook`. The step keeps the charge as
//! `awaiting_action` and sets a durable timer, `payment.timeout`, due after the setting
//! `WASAGA_PAYMENT_ACTION_TIMEOUT_MS` (15 minutes by default): whichever comes first
//! decides. The webhook captures; the timer declines (`authentication_timeout`), and a
//! confirmation arriving after that, or after a cancel, is refunded.
//!
//! State: `payment/{order_id}` holds a [`PaymentRecord`]. It makes every event idempotent
//! without the host's dedupe, and a `voided` record left by a cancel that arrives first
//! stops a late `stock.reserved` from charging.

use serde::{Deserialize, Serialize};
use wasaga_sdk::events::{PaymentCaptured, PaymentDeclined, PaymentRefunded, StockReserved, kinds};
use wasaga_sdk::http::{Request, Response};
use wasaga_sdk::{Context, Emit, Event, Host, HostExt, Manifest, Step, StepError};

/// What this step did for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Where the payment stands.
    pub status: PaymentStatus,
    /// The amount charged (or that would have been).
    pub amount_cents: i64,
    /// The gateway's id of the charge, when a remote gateway made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
}

/// Where an order's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Charged.
    Captured,
    /// The gateway refused; nothing was charged.
    Declined,
    /// Charged, then returned.
    Refunded,
    /// Cancelled before any charge: never charge this order (a charge confirmed later
    /// is refunded).
    Voided,
    /// Charged pending the cardholder's authentication (3-D Secure): the gateway's
    /// webhook or the step's timer decides.
    AwaitingAction,
}

/// The webhook the host delivers for this step (`POST /api/hooks/payment`).
pub const PAYMENT_HOOK: &str = "payment.hook";
/// The timer that ends the wait for the cardholder.
pub const PAYMENT_TIMEOUT: &str = "payment.timeout";
/// The setting: how long to wait for the cardholder, in milliseconds.
pub const ACTION_TIMEOUT_MS: &str = "WASAGA_PAYMENT_ACTION_TIMEOUT_MS";
/// 15 minutes.
const DEFAULT_ACTION_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// What the gateway answers for a token on an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GatewayAnswer {
    /// Charged, with the gateway's charge id when a remote gateway made it.
    Capture(Option<String>),
    /// The cardholder must authenticate; the gateway confirms the charge by webhook.
    RequiresAction(String),
    Decline(String),
    TryLater(String),
    Trap,
}

/// The answers the step decides before any gateway: the test builds of other versions
/// (see Cargo.toml) each change one, so rollout tests can tell them apart; and `tok_trap`.
fn decided_here(card_token: &str, order_id: &str) -> Option<GatewayAnswer> {
    if cfg!(feature = "half-trap") && order_id.bytes().map(u32::from).sum::<u32>() % 2 == 1 {
        return Some(GatewayAnswer::Trap);
    }
    if cfg!(feature = "strict") && card_token.starts_with("tok_flaky_") {
        return Some(GatewayAnswer::Decline("flaky_card".to_owned()));
    }
    if cfg!(feature = "fixed") && card_token == "tok_trap" {
        return Some(GatewayAnswer::Capture(None));
    }
    (card_token == "tok_trap").then_some(GatewayAnswer::Trap)
}

/// The gateway simulated in-process.
fn simulated(card_token: &str, attempt: u32) -> GatewayAnswer {
    if let Some(n) = card_token.strip_prefix("tok_flaky_") {
        return match n.parse::<u32>() {
            Ok(failures @ 1..=9) if attempt <= failures => {
                GatewayAnswer::TryLater(format!("gateway unavailable (attempt {attempt} of {failures} failing)"))
            }
            Ok(1..=9) => GatewayAnswer::Capture(None),
            _ => GatewayAnswer::Decline("unknown_token".to_owned()),
        };
    }
    match card_token {
        "tok_ok" => GatewayAnswer::Capture(None),
        "tok_decline" => GatewayAnswer::Decline("card_declined".to_owned()),
        _ => GatewayAnswer::Decline("unknown_token".to_owned()),
    }
}

/// The setting naming the gateway's base URL.
pub const GATEWAY_URL: &str = "WASAGA_GATEWAY_URL";

/// A charge through the gateway at `url`. The host makes the request's idempotency key
/// from the event, so a redelivery gets the gateway's first answer, never a second charge.
fn remote_charge(host: &mut dyn Host, url: &str, order_id: &str, amount_cents: i64, token: &str) -> GatewayAnswer {
    let body = serde_json::json!({ "order_id": order_id, "amount_cents": amount_cents, "token": token });
    let request = Request::post_json(&format!("{}/v1/charges", url.trim_end_matches('/')), &body);
    let response = match host.http(&request) {
        Ok(response) => response,
        Err(error) => return GatewayAnswer::TryLater(format!("the gateway did not answer: {error}")),
    };
    match response.status {
        200..=299 => match response.json::<serde_json::Value>() {
            Ok(charge) if charge["status"] == "requires_action" => match charge["id"].as_str() {
                Some(id) => GatewayAnswer::RequiresAction(id.to_owned()),
                None => GatewayAnswer::TryLater("the gateway asked for action on a charge without an id".to_owned()),
            },
            Ok(charge) => GatewayAnswer::Capture(charge["id"].as_str().map(str::to_owned)),
            Err(error) => GatewayAnswer::TryLater(error),
        },
        402 => GatewayAnswer::Decline(error_code(&response).unwrap_or_else(|| "card_declined".to_owned())),
        // 409: a request with the same key is still running (another host, or the attempt
        // the deadline cut short); 429 and 5xx: try again later.
        409 | 429 | 500..=599 => GatewayAnswer::TryLater(format!("the gateway answered {}", response.status)),
        status => GatewayAnswer::Decline(error_code(&response).unwrap_or_else(|| format!("gateway_{status}"))),
    }
}

/// The `error.code` of a card API's error body.
fn error_code(response: &Response) -> Option<String> {
    let body: serde_json::Value = response.json().ok()?;
    body["error"]["code"].as_str().map(str::to_owned)
}

/// A refund of `charge_id` through the gateway; `Ok` once the gateway holds it.
fn remote_refund(host: &mut dyn Host, url: &str, charge_id: &str) -> Result<(), StepError> {
    let body = serde_json::json!({ "charge_id": charge_id });
    let request = Request::post_json(&format!("{}/v1/refunds", url.trim_end_matches('/')), &body);
    let response = host.http(&request).map_err(|e| StepError::Retryable(format!("the gateway did not answer: {e}")))?;
    match response.status {
        200..=299 => Ok(()),
        409 if error_code(&response).as_deref() == Some("charge_already_refunded") => Ok(()),
        409 | 429 | 500..=599 => Err(StepError::Retryable(format!("the gateway answered {}", response.status))),
        status => Err(StepError::Fatal(format!(
            "the gateway refused the refund of {charge_id} ({status}): {}",
            error_code(&response).unwrap_or_default()
        ))),
    }
}

/// The payment step.
pub struct Payment;

/// The released version; the test features build other versions (see Cargo.toml).
const VERSION: &str = if cfg!(feature = "v2") {
    "0.2.0"
} else if cfg!(feature = "strict") {
    "0.3.0"
} else if cfg!(feature = "half-trap") {
    "0.4.0"
} else if cfg!(feature = "fixed") {
    "0.5.0"
} else {
    "0.1.0"
};

impl Step for Payment {
    fn manifest() -> Manifest {
        Manifest::new(
            "payment",
            VERSION,
            [kinds::STOCK_RESERVED, kinds::ORDER_CANCELLED, PAYMENT_HOOK, PAYMENT_TIMEOUT],
        )
    }

    fn handle(host: &mut dyn Host, ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
        match event.kind.as_str() {
            kinds::STOCK_RESERVED => stock_reserved(host, ctx, event),
            kinds::ORDER_CANCELLED => order_cancelled(host, event),
            PAYMENT_HOOK => hook(host, event),
            PAYMENT_TIMEOUT => timeout(host, event),
            _ => Ok(vec![]),
        }
    }
}

wasaga_sdk::export_step!(Payment);

/// The order's record key; an event without an order id cannot be handled.
fn payment_key(event: &Event) -> Result<String, StepError> {
    if event.order_id.is_empty() {
        return Err(StepError::Fatal(format!("{} without an order id", event.kind)));
    }
    Ok(format!("payment/{}", event.order_id))
}

fn stock_reserved(host: &mut dyn Host, ctx: &Context, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = payment_key(event)?;
    // A duplicate, or an order cancelled before it got here (voided): never charge twice.
    if host.get_json::<PaymentRecord>(&key)?.is_some() {
        return Ok(vec![]);
    }
    let reserved: StockReserved = event.payload()?;
    let amount_cents = reserved.total_cents;
    let token = &reserved.payment.card_token;
    let answer = match (decided_here(token, &event.order_id), host.setting(GATEWAY_URL)) {
        (Some(answer), _) => answer,
        (None, Some(url)) => remote_charge(host, &url, &event.order_id, amount_cents, token),
        (None, None) => simulated(token, ctx.attempt),
    };
    match answer {
        GatewayAnswer::Capture(charge_id) => {
            host.put_json(&key, &PaymentRecord { status: PaymentStatus::Captured, amount_cents, charge_id })?;
            Ok(vec![Emit::json(kinds::PAYMENT_CAPTURED, &PaymentCaptured { amount_cents })?])
        }
        GatewayAnswer::Decline(reason) => {
            host.put_json(&key, &PaymentRecord { status: PaymentStatus::Declined, amount_cents, charge_id: None })?;
            let declined = PaymentDeclined { reason };
            Ok(vec![Emit::json(kinds::PAYMENT_DECLINED, &declined)?])
        }
        GatewayAnswer::RequiresAction(charge_id) => {
            // The gateway's webhook may have overtaken this commit (a redelivery after a
            // crash): it then decides at once.
            if let Some(early) = host.get_json::<EarlyHook>(&early_key(event))?
                && early.charge_id == charge_id
            {
                host.delete(&early_key(event));
                let status = if early.succeeded { PaymentStatus::Captured } else { PaymentStatus::Declined };
                host.put_json(&key, &PaymentRecord { status, amount_cents, charge_id: Some(charge_id) })?;
                return Ok(vec![match early.succeeded {
                    true => Emit::json(kinds::PAYMENT_CAPTURED, &PaymentCaptured { amount_cents })?,
                    false => Emit::json(
                        kinds::PAYMENT_DECLINED,
                        &PaymentDeclined { reason: "authentication_failed".into() },
                    )?,
                }]);
            }
            let record =
                PaymentRecord { status: PaymentStatus::AwaitingAction, amount_cents, charge_id: Some(charge_id) };
            host.put_json(&key, &record)?;
            let wait =
                host.setting(ACTION_TIMEOUT_MS).and_then(|ms| ms.parse().ok()).unwrap_or(DEFAULT_ACTION_TIMEOUT_MS);
            let timer = Emit::json(PAYMENT_TIMEOUT, &serde_json::json!({ "charge_id": record.charge_id }))?;
            Ok(vec![timer.after(std::time::Duration::from_millis(wait))])
        }
        GatewayAnswer::TryLater(reason) => Err(StepError::Retryable(reason)),
        // A real trap of the component, on purpose: the host must survive and retry it.
        GatewayAnswer::Trap => panic!("tok_trap: the gateway simulator traps on purpose"),
    }
}

fn order_cancelled(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = payment_key(event)?;
    let Some(mut record) = host.get_json::<PaymentRecord>(&key)? else {
        // The cancel overtook the reservation: void the order so it is never charged.
        host.put_json(&key, &PaymentRecord { status: PaymentStatus::Voided, amount_cents: 0, charge_id: None })?;
        return Ok(vec![]);
    };
    if record.status == PaymentStatus::AwaitingAction {
        // Not charged yet: a confirmation arriving later is refunded (see `hook`).
        record.status = PaymentStatus::Voided;
        host.put_json(&key, &record)?;
        return Ok(vec![]);
    }
    if record.status != PaymentStatus::Captured {
        return Ok(vec![]);
    }
    if let Some(charge_id) = &record.charge_id {
        let Some(url) = host.setting(GATEWAY_URL) else {
            return Err(StepError::Fatal(format!(
                "charge {charge_id} was made through a gateway, but {GATEWAY_URL} is not set: cannot refund it"
            )));
        };
        remote_refund(host, &url, charge_id)?;
    }
    record.status = PaymentStatus::Refunded;
    host.put_json(&key, &record)?;
    let refunded = PaymentRefunded { amount_cents: record.amount_cents };
    Ok(vec![Emit::json(kinds::PAYMENT_REFUNDED, &refunded)?])
}

/// The gateway's webhook, as the host delivers it: `{"delivery_id", "body"}`, the body a
/// card API's event (`{"type": "charge.succeeded", "data": {"id", ...}}`).
#[derive(Debug, Deserialize)]
struct Hook {
    body: HookBody,
}

#[derive(Debug, Deserialize)]
struct HookBody {
    #[serde(rename = "type")]
    kind: String,
    data: HookCharge,
}

#[derive(Debug, Deserialize)]
struct HookCharge {
    id: String,
}

/// A webhook that arrived before the charge's request was committed: kept for it.
#[derive(Debug, Serialize, Deserialize)]
struct EarlyHook {
    charge_id: String,
    succeeded: bool,
}

fn early_key(event: &Event) -> String {
    format!("payment/{}/hook", event.order_id)
}

/// The gateway confirmed (or failed) a charge awaiting the cardholder.
fn hook(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = payment_key(event)?;
    let hook: Hook = event.payload()?;
    let succeeded = match hook.body.kind.as_str() {
        "charge.succeeded" => true,
        "charge.failed" => false,
        // Other events of the gateway mean nothing to this step.
        _ => return Ok(vec![]),
    };
    let Some(mut record) = host.get_json::<PaymentRecord>(&key)? else {
        // The webhook overtook the commit of the charge's request: the request, delivered
        // again, finds it (the gateway answers it the same: the host keeps its key).
        let early = EarlyHook { charge_id: hook.body.data.id, succeeded };
        host.put_json(&early_key(event), &early)?;
        return Ok(vec![]);
    };
    if record.charge_id.as_deref() != Some(hook.body.data.id.as_str()) {
        return Err(StepError::Fatal(format!(
            "the webhook confirms charge {}, but order {} holds {:?}",
            hook.body.data.id, event.order_id, record.charge_id
        )));
    }
    match (record.status, succeeded) {
        (PaymentStatus::AwaitingAction, true) => {
            record.status = PaymentStatus::Captured;
            host.put_json(&key, &record)?;
            let captured = PaymentCaptured { amount_cents: record.amount_cents };
            Ok(vec![Emit::json(kinds::PAYMENT_CAPTURED, &captured)?])
        }
        (PaymentStatus::AwaitingAction, false) => {
            record.status = PaymentStatus::Declined;
            host.put_json(&key, &record)?;
            Ok(vec![Emit::json(kinds::PAYMENT_DECLINED, &PaymentDeclined { reason: "authentication_failed".into() })?])
        }
        // Confirmed after the timer declined or a cancel voided it: give the money back.
        (PaymentStatus::Declined | PaymentStatus::Voided, true) => {
            let url = host.setting(GATEWAY_URL).ok_or_else(|| {
                StepError::Fatal(format!("{GATEWAY_URL} is not set: cannot refund {}", hook.body.data.id))
            })?;
            remote_refund(host, &url, &hook.body.data.id)?;
            record.status = PaymentStatus::Refunded;
            host.put_json(&key, &record)?;
            Ok(vec![])
        }
        // A duplicate, or nothing left to do.
        _ => Ok(vec![]),
    }
}

/// The cardholder did not authenticate in time: decline, so the order is cancelled and
/// its stock released. A charge already decided is left as it is.
fn timeout(host: &mut dyn Host, event: &Event) -> Result<Vec<Emit>, StepError> {
    let key = payment_key(event)?;
    let Some(mut record) = host.get_json::<PaymentRecord>(&key)? else {
        return Ok(vec![]);
    };
    if record.status != PaymentStatus::AwaitingAction {
        return Ok(vec![]);
    }
    record.status = PaymentStatus::Declined;
    host.put_json(&key, &record)?;
    Ok(vec![Emit::json(kinds::PAYMENT_DECLINED, &PaymentDeclined { reason: "authentication_timeout".into() })?])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wasaga_sdk::MemoryHost;

    fn reserved(order_id: &str, card_token: &str) -> Event {
        let payload = json!({
            "items": [{"sku": "A", "quantity": 2, "unit_price_cents": 1250}],
            "total_cents": 2500,
            "payment": {"card_token": card_token},
            "levels": [],
        });
        Event {
            id: format!("reserved-{order_id}"),
            kind: kinds::STOCK_RESERVED.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 0,
            payload: payload.to_string(),
        }
    }

    fn cancelled(order_id: &str) -> Event {
        Event {
            id: format!("cancelled-{order_id}"),
            kind: kinds::ORDER_CANCELLED.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 0,
            payload: json!({"reason": "customer_request"}).to_string(),
        }
    }

    /// What one delivery produced, in a form a table can spell.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Emits(Vec<(String, Value)>),
        Retryable,
        Fatal,
    }

    fn emits(list: &[(&str, Value)]) -> Outcome {
        Outcome::Emits(list.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    fn deliver(host: &mut MemoryHost, event: &Event, attempt: u32) -> Outcome {
        match Payment::handle(host, &Context { attempt }, event) {
            Ok(list) => {
                Outcome::Emits(list.into_iter().map(|e| (e.kind, serde_json::from_str(&e.payload).unwrap())).collect())
            }
            Err(StepError::Retryable(_)) => Outcome::Retryable,
            Err(StepError::Fatal(_)) => Outcome::Fatal,
        }
    }

    fn status(host: &MemoryHost, order_id: &str) -> Option<PaymentStatus> {
        host.get_json::<PaymentRecord>(&format!("payment/{order_id}")).unwrap().map(|r| r.status)
    }

    /// Deliver `(event, attempt)` in turn; expect the last outcome and the final status.
    fn check(deliveries: &[(Event, u32)], last: Outcome, final_status: Option<PaymentStatus>) {
        let mut host = MemoryHost::default();
        let mut outcome = None;
        for (event, attempt) in deliveries {
            outcome = Some(deliver(&mut host, event, *attempt));
        }
        assert_eq!(outcome, Some(last), "after {deliveries:?}");
        assert_eq!(status(&host, "o1"), final_status, "after {deliveries:?}");
    }

    fn captured() -> Outcome {
        emits(&[("payment.captured", json!({"amount_cents": 2500}))])
    }

    fn declined(reason: &str) -> Outcome {
        emits(&[("payment.declined", json!({"reason": reason}))])
    }

    #[test]
    fn manifest_names_the_step() {
        let manifest = Payment::manifest();
        assert_eq!(manifest.name, "payment");
        assert_eq!(manifest.version, VERSION);
        assert_eq!(manifest.subscribes, ["stock.reserved", "order.cancelled", "payment.hook", "payment.timeout"]);
    }

    #[test]
    fn every_token() {
        use PaymentStatus::*;
        let r = |token| (reserved("o1", token), 1);
        check(&[r("tok_ok")], captured(), Some(Captured));
        check(&[r("tok_decline")], declined("card_declined"), Some(Declined));
        check(&[r("tok_nope")], declined("unknown_token"), Some(Declined));
        check(&[r("")], declined("unknown_token"), Some(Declined));
        check(&[r("tok_flaky_0")], declined("unknown_token"), Some(Declined));
        check(&[r("tok_flaky_10")], declined("unknown_token"), Some(Declined));
        check(&[r("tok_flaky_x")], declined("unknown_token"), Some(Declined));
    }

    #[test]
    fn flaky_fails_on_its_first_n_attempts_then_captures() {
        use PaymentStatus::*;
        let flaky2 = reserved("o1", "tok_flaky_2");
        check(&[(flaky2.clone(), 1)], Outcome::Retryable, None);
        check(&[(flaky2.clone(), 1), (flaky2.clone(), 2)], Outcome::Retryable, None);
        check(&[(flaky2.clone(), 3)], captured(), Some(Captured));
        let all = [(flaky2.clone(), 1), (flaky2.clone(), 2), (flaky2.clone(), 3)];
        check(&all, captured(), Some(Captured));
        check(&[(flaky2, 4)], captured(), Some(Captured));
        for n in 1..=9u32 {
            let event = reserved("o1", &format!("tok_flaky_{n}"));
            check(&[(event.clone(), n)], Outcome::Retryable, None);
            check(&[(event, n + 1)], captured(), Some(Captured));
        }
    }

    #[test]
    fn trap_panics_on_every_attempt() {
        for attempt in 1..=6 {
            let result = std::panic::catch_unwind(|| {
                let mut host = MemoryHost::default();
                deliver(&mut host, &reserved("o1", "tok_trap"), attempt)
            });
            assert!(result.is_err(), "attempt {attempt}");
        }
    }

    #[test]
    fn duplicates_and_compensation() {
        use PaymentStatus::*;
        let ok = || (reserved("o1", "tok_ok"), 1);
        let cancel = || (cancelled("o1"), 1);
        let refund = emits(&[("payment.refunded", json!({"amount_cents": 2500}))]);
        // A duplicate reservation never charges twice.
        check(&[ok(), ok()], emits(&[]), Some(Captured));
        // A cancel refunds a capture exactly once.
        check(&[ok(), cancel()], refund, Some(Refunded));
        check(&[ok(), cancel(), cancel()], emits(&[]), Some(Refunded));
        check(&[ok(), cancel(), ok()], emits(&[]), Some(Refunded));
        // A declined payment has nothing to refund.
        let decline = (reserved("o1", "tok_decline"), 1);
        check(&[decline.clone(), cancel()], emits(&[]), Some(Declined));
        check(&[decline.clone(), decline], emits(&[]), Some(Declined));
        // Cancel first: voided, and the late reservation is not charged.
        check(&[cancel()], emits(&[]), Some(Voided));
        check(&[cancel(), ok()], emits(&[]), Some(Voided));
        check(&[cancel(), ok(), cancel()], emits(&[]), Some(Voided));
        // A retried flaky charge that later captures is refunded once.
        let flaky = reserved("o1", "tok_flaky_1");
        let refund = emits(&[("payment.refunded", json!({"amount_cents": 2500}))]);
        check(&[(flaky.clone(), 1), (flaky, 2), cancel()], refund, Some(Refunded));
    }

    #[test]
    fn bad_input_is_fatal() {
        let mut bad = reserved("o1", "tok_ok");
        bad.payload = "{\"total_cents\": \"many\"}".to_owned();
        check(&[(bad, 1)], Outcome::Fatal, None);
        let mut host = MemoryHost::default();
        assert_eq!(deliver(&mut host, &reserved("", "tok_ok"), 1), Outcome::Fatal);
        assert_eq!(deliver(&mut host, &cancelled(""), 1), Outcome::Fatal);
        assert!(host.state.is_empty());
    }

    /// A host whose gateway answers `status` and `body` to charges and 200 to refunds.
    fn remote(status: u16, body: Value) -> MemoryHost {
        let mut host = MemoryHost::default();
        host.settings.insert(GATEWAY_URL.to_owned(), "http://gw.test/".to_owned());
        host.http = Some(Box::new(move |request| {
            let body = if request.url.ends_with("/v1/refunds") { json!({"id": "re_1"}) } else { body.clone() };
            let status = if request.url.ends_with("/v1/refunds") { 200 } else { status };
            Ok(Response { status, headers: vec![], body: body.to_string().into_bytes() })
        }));
        host
    }

    #[test]
    fn a_configured_gateway_is_called_and_its_answers_decide() {
        use PaymentStatus::*;
        let mut host = remote(200, json!({"id": "ch_7", "status": "succeeded"}));
        assert_eq!(deliver(&mut host, &reserved("o1", "tok_ok"), 1), captured());
        let record = host.get_json::<PaymentRecord>("payment/o1").unwrap().unwrap();
        assert_eq!((record.status, record.charge_id.as_deref()), (Captured, Some("ch_7")));
        let charge = &host.requests[0];
        assert_eq!((charge.method.as_str(), charge.url.as_str()), ("POST", "http://gw.test/v1/charges"));
        let sent: Value = serde_json::from_slice(&charge.body).unwrap();
        assert_eq!(sent, json!({"order_id": "o1", "amount_cents": 2500, "token": "tok_ok"}));
        // No key of its own: the host makes it from the event.
        assert!(!charge.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("idempotency-key")));
        let refund = emits(&[("payment.refunded", json!({"amount_cents": 2500}))]);
        assert_eq!(deliver(&mut host, &cancelled("o1"), 1), refund);
        let sent: Value = serde_json::from_slice(&host.requests[1].body).unwrap();
        assert_eq!(sent, json!({"charge_id": "ch_7"}));
        assert_eq!(status(&host, "o1"), Some(Refunded));

        let mut host = remote(402, json!({"error": {"code": "card_declined"}}));
        assert_eq!(deliver(&mut host, &reserved("o1", "tok_decline"), 1), declined("card_declined"));
        for status in [409, 429, 503] {
            let mut host = remote(status, json!({"error": {"code": "try_again"}}));
            assert_eq!(deliver(&mut host, &reserved("o1", "tok_flaky_2"), 1), Outcome::Retryable, "{status}");
            assert!(host.state.is_empty());
        }
        let mut host = MemoryHost::default();
        host.settings.insert(GATEWAY_URL.to_owned(), "http://gw.test".to_owned());
        assert_eq!(deliver(&mut host, &reserved("o1", "tok_ok"), 1), Outcome::Retryable, "no answer: try again");
    }

    fn hook_event(order_id: &str, kind: &str, charge_id: &str) -> Event {
        let body = json!({"type": kind, "data": {"id": charge_id, "order_id": order_id, "status": "succeeded"}});
        Event {
            id: format!("hook-{order_id}-{kind}"),
            kind: PAYMENT_HOOK.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 0,
            payload: json!({"delivery_id": "evt_1", "body": body}).to_string(),
        }
    }

    fn timeout_event(order_id: &str) -> Event {
        Event {
            id: format!("timeout-{order_id}"),
            kind: PAYMENT_TIMEOUT.to_owned(),
            order_id: order_id.to_owned(),
            occurred_at_ms: 0,
            payload: json!({"charge_id": "ch_3"}).to_string(),
        }
    }

    #[test]
    fn three_d_secure_waits_for_the_webhook_or_the_timer() {
        use PaymentStatus::*;
        let action = || {
            let mut host = remote(202, json!({"id": "ch_3", "status": "requires_action"}));
            host.settings.insert(ACTION_TIMEOUT_MS.to_owned(), "5000".to_owned());
            let first = Payment::handle(&mut host, &Context { attempt: 1 }, &reserved("o1", "tok_3ds")).unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!((first[0].kind.as_str(), first[0].delay_ms), (PAYMENT_TIMEOUT, Some(5000)));
            assert_eq!(status(&host, "o1"), Some(AwaitingAction));
            host
        };
        // The webhook first: captured; the timer then changes nothing.
        let mut host = action();
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_3"), 1), captured());
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_3"), 1), emits(&[]));
        assert_eq!(deliver(&mut host, &timeout_event("o1"), 1), emits(&[]));
        assert_eq!(status(&host, "o1"), Some(Captured));
        // The timer first: declined; a late confirmation is refunded, once.
        let mut host = action();
        assert_eq!(deliver(&mut host, &timeout_event("o1"), 1), declined("authentication_timeout"));
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_3"), 1), emits(&[]));
        assert_eq!(status(&host, "o1"), Some(Refunded));
        assert!(host.requests.iter().any(|r| r.url.ends_with("/v1/refunds")));
        // A cancel while waiting voids it; a confirmation then is refunded.
        let mut host = action();
        assert_eq!(deliver(&mut host, &cancelled("o1"), 1), emits(&[]));
        assert_eq!(status(&host, "o1"), Some(Voided));
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_3"), 1), emits(&[]));
        assert_eq!(status(&host, "o1"), Some(Refunded));
        // A webhook before the charge's commit is kept, and the charge then captures at once.
        let mut host = remote(202, json!({"id": "ch_3", "status": "requires_action"}));
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_3"), 1), emits(&[]));
        assert_eq!(status(&host, "o1"), None);
        assert_eq!(deliver(&mut host, &reserved("o1", "tok_3ds"), 1), captured());
        assert_eq!(status(&host, "o1"), Some(Captured));
        // One for another charge is refused.
        let mut host = action();
        assert_eq!(deliver(&mut host, &hook_event("o1", "charge.succeeded", "ch_9"), 1), Outcome::Fatal);
        assert_eq!(
            deliver(&mut host, &hook_event("o1", "charge.failed", "ch_3"), 1),
            declined("authentication_failed")
        );
    }

    #[test]
    fn other_kinds_are_ignored() {
        let mut event = cancelled("o1");
        event.kind = "payment.captured".to_owned();
        check(&[(event, 1)], emits(&[]), None);
    }
}
