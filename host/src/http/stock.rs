//! `/api/stock/{sku}`: set a SKU's available stock (admin; applied through the
//! inventory step like any event) and read the levels the host keeps from its events.

use super::AppState;
use super::body::{Checker, JsonObject};
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::{AdminOnly, Common};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A SKU's levels as the inventory step's events report them.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    sku: String,
    available: i64,
    reserved: i64,
    sold: i64,
}

fn check_sku(sku: &str) -> Result<(), ApiError> {
    let mut check = Checker::default();
    if sku.is_empty() || sku.chars().count() > 64 || sku.chars().any(char::is_control) {
        check.fail("sku", "must be 1 to 64 printable characters");
    }
    check.finish(Some(()))
}

/// The body of `PUT /api/stock/{sku}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Documents the body; the handler checks it field by field.
pub struct SetStock {
    /// 0 to 10^12.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_u64)]
    available: u64,
}

/// The answer to setting stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockSetView {
    sku: String,
    available: i64,
}

#[utoipa::path(
    put, path = "/api/stock/{sku}", tag = "stock",
    params(("sku" = String, Path, description = "1 to 64 printable characters")),
    request_body(content = SetStock, content_type = "application/json"),
    responses(
        Common,
        AdminOnly,
        (status = 202, description = "Queued for the inventory step", body = StockSetView),
        (status = 413, description = "The body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid SKU or level", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    check_sku(&sku)?;
    let mut check = Checker::default();
    check.only(&body, "", &["available"]);
    let available = check.integer(&body, "", "available", 0, 1_000_000_000_000);
    let available = check.finish(available)?;
    crate::saga::ops::set_stock(&state.saga, &sku, u64::try_from(available).unwrap_or(0)).await?;
    Ok((StatusCode::ACCEPTED, Json(StockSetView { sku, available })).into_response())
}

#[utoipa::path(
    get, path = "/api/stock/{sku}", tag = "stock",
    params(("sku" = String, Path, description = "1 to 64 printable characters")),
    responses(
        Common,
        (status = 200, description = "The levels", body = StockView),
        (status = 404, description = "No stock known", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid SKU", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get(State(state): State<AppState>, Path(sku): Path<String>) -> Result<Json<StockView>, ApiError> {
    check_sku(&sku)?;
    match state.saga.query().stock(&sku).await? {
        Some(row) => {
            Ok(Json(StockView { sku: row.sku, available: row.available, reserved: row.reserved, sold: row.sold }))
        }
        None => Err(ApiError::NotFound(format!("no stock known for SKU {sku:?}"))),
    }
}
