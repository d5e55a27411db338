//! `/api/stock/{sku}`: set a SKU's available stock (admin; applied through the
//! inventory step like any event) and read the levels the host keeps from its events.

use super::AppState;
use super::body::{Checker, JsonObject};
use super::problem::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize)]
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
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"sku": sku, "available": available}))).into_response())
}

pub async fn get(State(state): State<AppState>, Path(sku): Path<String>) -> Result<Json<StockView>, ApiError> {
    check_sku(&sku)?;
    match state.saga.host_store().stock(&sku).await? {
        Some(row) => {
            Ok(Json(StockView { sku: row.sku, available: row.available, reserved: row.reserved, sold: row.sold }))
        }
        None => Err(ApiError::NotFound(format!("no stock known for SKU {sku:?}"))),
    }
}
