//! `GET /api/admin/archive?order_id=…`: the archived events of an order, read back from
//! the archive itself (not from the store), so what it lists is what was written.

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use super::problem::Problem;
use super::responses::{AdminOnly, Common};
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};
use wasaga_sdk::archive::order_folder;

/// Which order's objects to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// The order id.
    order_id: Option<String>,
}

/// One archived event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchivedObject {
    name: String,
    event_id: String,
}

/// An order's archived events.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveListing {
    order_id: String,
    objects: Vec<ArchivedObject>,
}

#[utoipa::path(
    get, path = "/api/admin/archive", tag = "admin",
    params(ArchiveQuery),
    responses(
        Common,
        AdminOnly,
        (status = 200, description = "The objects, read back from the archive", body = ArchiveListing),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A missing or invalid order id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The archive cannot be read", body = Problem, content_type = "application/problem+json")
    ),
    security(("admin_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ArchiveQuery>,
) -> Result<Json<ArchiveListing>, ApiError> {
    let mut check = Checker::default();
    let order_id = query.order_id.filter(|id| !id.is_empty());
    match &order_id {
        None => check.fail("order_id", "is required"),
        Some(id) if id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            check.fail("order_id", "is not an order id")
        }
        Some(_) => {}
    }
    let order_id = check.finish(order_id)?;
    let timeline = state.saga.query().timeline(&order_id).await?;
    if timeline.is_empty() {
        return Err(ApiError::NotFound(format!("order {order_id} does not exist")));
    }
    // An order's events can span days; each day is its own folder.
    let prefixes: BTreeSet<String> =
        timeline.iter().map(|row| order_folder(&order_id, u64::try_from(row.at_ms).unwrap_or(0))).collect();
    let mut objects = Vec::new();
    for prefix in prefixes {
        let names = state
            .saga
            .archive
            .list(&prefix)
            .await
            .map_err(|e| ApiError::Unavailable(format!("the archive cannot be read: {e}")))?;
        for name in names {
            let event_id = name.rsplit('/').next().unwrap_or_default().trim_end_matches(".json").to_owned();
            objects.push(ArchivedObject { name, event_id });
        }
    }
    Ok(Json(ArchiveListing { order_id, objects }))
}
