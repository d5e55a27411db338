//! `/api/orders`: place (with `Idempotency-Key`), read with the timeline, list, cancel.

use super::AppState;
use super::body::{Checker, JsonObject};
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::{AdminOnly, ClientKeyed, Common};
use crate::saga::orders::{self, Cancelled, PlaceOrder, Placed};
use crate::store::{OrderPage, OrderWithTimeline};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use wasaga_sdk::events::LineItem;

/// `{"order_id","status"}`, the answer to place and cancel.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted<'a> {
    order_id: &'a str,
    /// `pending`, or `cancelled` for a cancel.
    status: &'a str,
}

/// An order to place (the body of `POST /api/orders`); unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Documents the body; the handler checks it field by field.
pub struct PlaceOrderRequest {
    /// 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    customer_id: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<LineItemRequest>,
    payment: PaymentRequest,
}

/// One line of an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LineItemRequest {
    /// 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    sku: String,
    /// 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    quantity: u32,
    /// 0 to 100,000,000.
    #[schema(minimum = 0, maximum = 100_000_000)]
    unit_price_cents: i64,
}

/// How the order is paid.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PaymentRequest {
    /// A card token: `tok_ok`, `tok_decline`, `tok_flaky_N`, `tok_trap`.
    #[schema(min_length = 1, max_length = 64)]
    card_token: String,
}

/// One event of an order, with who emitted it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    event_id: String,
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: time::OffsetDateTime,
    step: String,
    step_version: String,
    /// The attempt of the call that emitted the event (1 for the first delivery).
    attempt: Option<i64>,
}

/// A durable timer of the order that has not fired yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimerView {
    event_id: String,
    kind: String,
    /// The step that set it.
    step: String,
    /// When it fires (the store's clock).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    due_at: time::OffsetDateTime,
}

/// An order with its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    order_id: String,
    customer_id: String,
    status: String,
    cancel_reason: Option<String>,
    total_cents: i64,
    #[schema(value_type = Vec<Object>)]
    items: Value,
    timeline: Vec<TimelineView>,
    /// Timers pending for the order, soonest first (one order's view only, not lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    timers: Option<Vec<TimerView>>,
}

fn at(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn order_view(OrderWithTimeline { order: row, timeline }: OrderWithTimeline) -> OrderView {
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
                attempt: t.attempt,
            })
            .collect(),
        timers: None,
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

#[utoipa::path(
    post, path = "/api/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order")),
    request_body(content = PlaceOrderRequest, content_type = "application/json"),
    security((), ("client_key" = ["place"]), ("admin_token" = [])),
    responses(
        Common,
        ClientKeyed,
        (status = 403, description = "The bearer token is not a client key with the place scope, nor the admin token", body = Problem, content_type = "application/problem+json"),
        (status = 202, description = "Accepted; follow the Location header", body = Accepted, headers(("Location" = String, description = "/api/orders/{id}"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key, or a control character in the path or query", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (each listed), or an Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not accepting orders: a saga step is not loaded", body = Problem, content_type = "application/problem+json")
    )
)]
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
    // The body's digest tells a replay from a reused key; only a keyed request needs it.
    let hash = key.as_ref().map(|_| hex::encode(Sha256::digest(Value::Object(body).to_string().as_bytes())));
    let idempotency = key.as_deref().zip(hash.as_deref());
    let (order_id, status) = match orders::place(&state.saga, order, idempotency).await? {
        // Just written: pending.
        Placed::New(id) => (id, orders::PENDING.to_owned()),
        // A replay answers with the order as it is now.
        Placed::Replayed(id) => {
            let status = state.saga.query().order_row(&id).await?.map(|o| o.status);
            (id, status.unwrap_or_else(|| orders::PENDING.to_owned()))
        }
        Placed::InFlight => {
            return Err(ApiError::Conflict("a request with this Idempotency-Key is still being handled".to_owned()));
        }
        Placed::KeyReused => {
            return Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used with a different body".to_owned(),
            });
        }
    };
    let location = format!("/api/orders/{order_id}");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Accepted { order_id: &order_id, status: &status }))
        .into_response())
}

#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    security((), ("client_key" = ["read"]), ("admin_token" = [])),
    responses(
        Common,
        ClientKeyed,
        (status = 403, description = "The bearer token is not a client key with the read scope, nor the admin token", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The order with its timeline", body = OrderView),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<OrderView>, ApiError> {
    let Some(order) = state.saga.query().order(&id).await? else {
        return Err(ApiError::NotFound(format!("no order {id:?}")));
    };
    let timers = state.saga.query().pending_timers(&id).await?;
    let mut view = order_view(order);
    view.timers = Some(
        timers
            .into_iter()
            .map(|t| TimerView { event_id: t.event_id, kind: t.kind, step: t.step, due_at: at(t.due_at_ms) })
            .collect(),
    );
    Ok(Json(view))
}

/// Filters and paging of the order list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending`, `completed` or `cancelled`.
    status: Option<String>,
    /// 1 to 500; 50 by default.
    limit: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    orders: Vec<OrderView>,
    next: Option<String>,
}

#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    params(ListQuery),
    security(("admin_token" = [])),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "Orders, newest first, of every customer: the admin token only", body = OrderList),
        (status = 403, description = "The bearer token is not the admin token (a client key is not enough)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid filter", body = Problem, content_type = "application/problem+json")
    )
)]
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
    let page = OrderPage { status, limit, before_seq: after };
    let rows = state.saga.query().order_page(&page).await?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.order.seq.to_string())).flatten();
    Ok(Json(OrderList { orders: rows.into_iter().map(order_view).collect(), next }))
}

#[utoipa::path(
    post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    security((), ("client_key" = ["cancel"]), ("admin_token" = [])),
    responses(
        Common,
        ClientKeyed,
        (status = 403, description = "The bearer token is not a client key with the cancel scope, nor the admin token", body = Problem, content_type = "application/problem+json"),
        (status = 202, description = "Cancelled; the steps compensate", body = Accepted),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already cancelled", body = Problem, content_type = "application/problem+json")
    )
)]
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
