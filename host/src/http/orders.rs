//! `/api/orders`: place (with `Idempotency-Key`), read with the timeline, list, cancel.

use super::AppState;
use super::body::{Checker, JsonObject};
use super::problem::ApiError;
use crate::saga::orders::{self, Cancelled, PlaceOrder, Placed};
use crate::store::{OrderRow, TimelineRow};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use wasaga_sdk::events::LineItem;

/// `{"order_id","status"}`, the answer to place and cancel.
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    order_id: &'a str,
    status: &'a str,
}

#[derive(Debug, Serialize)]
pub struct TimelineView {
    event_id: String,
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    at: time::OffsetDateTime,
    step: String,
    step_version: String,
}

#[derive(Debug, Serialize)]
pub struct OrderView {
    order_id: String,
    customer_id: String,
    status: String,
    cancel_reason: Option<String>,
    total_cents: i64,
    items: Value,
    timeline: Vec<TimelineView>,
}

fn at(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn order_view(row: OrderRow, timeline: Vec<TimelineRow>) -> OrderView {
    OrderView {
        order_id: row.id,
        customer_id: row.customer_id,
        status: row.status,
        cancel_reason: row.cancel_reason,
        total_cents: row.total_cents,
        items: serde_json::from_str(&row.items).unwrap_or(Value::Array(Vec::new())),
        timeline: timeline
            .into_iter()
            .map(|t| TimelineView {
                event_id: t.event_id,
                kind: t.kind,
                at: at(t.at_ms),
                step: t.step,
                step_version: t.step_version,
            })
            .collect(),
    }
}

/// Check a body against the order contract, naming every problem.
fn parse_order(body: &Map<String, Value>) -> Result<PlaceOrder, ApiError> {
    let mut check = Checker::default();
    check.only(body, "", &["customer_id", "items", "payment"]);
    let customer_id = check.string(body, "", "customer_id", 128);
    let mut items = Vec::new();
    if let Some(lines) = check.array(body, "", "items", 1, 100) {
        for (i, line) in lines.iter().enumerate() {
            let prefix = format!("items[{i}]");
            let Some(line) = line.as_object() else {
                check.fail(&prefix, "must be an object");
                continue;
            };
            check.only(line, &prefix, &["sku", "quantity", "unit_price_cents"]);
            let sku = check.string(line, &prefix, "sku", 64);
            let quantity = check.integer(line, &prefix, "quantity", 1, 1_000_000);
            let price = check.integer(line, &prefix, "unit_price_cents", 0, 100_000_000);
            if let (Some(sku), Some(quantity), Some(unit_price_cents)) = (sku, quantity, price) {
                let quantity = u32::try_from(quantity).unwrap_or(u32::MAX);
                items.push(LineItem { sku, quantity, unit_price_cents });
            }
        }
    }
    let token = check.object(body, "", "payment").and_then(|payment| {
        check.only(payment, "payment", &["card_token"]);
        check.string(payment, "payment", "card_token", 64)
    });
    let order = match (customer_id, token) {
        (Some(customer_id), Some(card_token)) => Some(PlaceOrder { customer_id, items, card_token }),
        _ => None,
    };
    check.finish(order)
}

/// Releases an idempotency key held while its first request runs.
struct InFlight<'a> {
    state: &'a AppState,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.lock().remove(&self.key);
    }
}

pub async fn place(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.trim().is_empty() && key.len() <= 255 => Some(key.trim().to_owned()),
            _ => return Err(ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible characters".to_owned())),
        },
    };
    let order = parse_order(&body)?;
    // An order placed while a step is missing would wait for it forever.
    let missing = state.missing_steps();
    if !missing.is_empty() {
        return Err(ApiError::Unavailable(format!("not accepting orders: steps not loaded: {}", missing.join(", "))));
    }
    let hash = hex::encode(Sha256::digest(Value::Object(body).to_string().as_bytes()));
    let _guard = match &key {
        Some(key) => {
            let mut in_flight = state.in_flight.lock();
            if !in_flight.insert(key.clone()) {
                return Err(ApiError::Conflict(
                    "a request with this Idempotency-Key is still being handled".to_owned(),
                ));
            }
            Some(InFlight { state: &state, key: key.clone() })
        }
        None => None,
    };
    let idempotency = key.as_deref().map(|k| (k, hash.as_str()));
    let order_id = match orders::place(&state.saga, order, idempotency).await? {
        Placed::New(id) | Placed::Replayed(id) => id,
        Placed::KeyReused => {
            return Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used with a different body".to_owned(),
            });
        }
    };
    let status =
        state.saga.host_store().order(&order_id).await?.map(|o| o.status).unwrap_or_else(|| orders::PENDING.to_owned());
    let location = format!("/api/orders/{order_id}");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Accepted { order_id: &order_id, status: &status }))
        .into_response())
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<OrderView>, ApiError> {
    let Some(row) = state.saga.host_store().order(&id).await? else {
        return Err(ApiError::NotFound(format!("no order {id:?}")));
    };
    let timeline = state.saga.stores.timeline(&id).await?;
    Ok(Json(order_view(row, timeline)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OrderList {
    orders: Vec<OrderView>,
    next: Option<String>,
}

pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Result<Json<OrderList>, ApiError> {
    let mut check = Checker::default();
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(status) = &status
        && ![orders::PENDING, orders::COMPLETED, orders::CANCELLED].contains(&status.as_str())
    {
        check.fail("status", "must be pending, completed or cancelled");
    }
    let limit = match query.limit.as_deref() {
        None | Some("") => 50,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                check.fail("limit", "must be a whole number from 1 to 500");
                50
            }
        },
    };
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => match text.parse::<i64>() {
            Ok(seq) if seq > 0 => Some(seq),
            _ => {
                check.fail("after", "is not a cursor this API returned");
                None
            }
        },
    };
    check.finish(Some(()))?;
    let rows = state.saga.host_store().orders(status.as_deref(), limit, after).await?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.seq.to_string())).flatten();
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        let timeline = state.saga.stores.timeline(&row.id).await?;
        orders.push(order_view(row, timeline));
    }
    Ok(Json(OrderList { orders, next }))
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match orders::cancel(&state.saga, &id).await? {
        Cancelled::Done => {
            Ok((StatusCode::ACCEPTED, Json(Accepted { order_id: &id, status: orders::CANCELLED })).into_response())
        }
        Cancelled::AlreadyCancelled => Err(ApiError::Conflict(format!("order {id} is already cancelled"))),
        Cancelled::NotFound => Err(ApiError::NotFound(format!("no order {id:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(body: Value) -> Vec<String> {
        let Value::Object(map) = body else { panic!("object") };
        match parse_order(&map) {
            Ok(_) => Vec::new(),
            Err(ApiError::Invalid(errors)) => {
                errors.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn every_problem_of_an_order_is_listed() {
        let valid = json!({"customer_id": "c-1", "items": [{"sku": "A", "quantity": 1, "unit_price_cents": 0}], "payment": {"card_token": "tok_ok"}});
        assert!(errors(valid).is_empty());
        let bad = json!({
            "customer_id": "",
            "items": [{"sku": "", "quantity": 0, "unit_price_cents": -1, "color": "red"}, 7],
            "payment": {},
            "coupon": "X"
        });
        assert_eq!(
            errors(bad),
            [
                "coupon: unknown field",
                "customer_id: must not be empty",
                "items[0].color: unknown field",
                "items[0].sku: must not be empty",
                "items[0].quantity: must be at least 1",
                "items[0].unit_price_cents: must be at least 0",
                "items[1]: must be an object",
                "payment.card_token: is required",
            ]
        );
        assert_eq!(
            errors(json!({"customer_id": "c", "items": [], "payment": {"card_token": "t"}})),
            ["items: must have at least 1 element(s)"]
        );
        assert_eq!(
            errors(
                json!({"customer_id": 5, "items": [{"sku": "A", "quantity": 1.5, "unit_price_cents": "1"}], "payment": "x"})
            ),
            [
                "customer_id: must be a string",
                "items[0].quantity: must be a whole number",
                "items[0].unit_price_cents: must be a number",
                "payment: must be an object",
            ]
        );
    }
}
