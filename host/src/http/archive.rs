//! `GET /api/admin/archive?order_id=…`: the archived events of an order, read back from
//! the archive itself (not from the store), so what it lists is what was written.

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use wasaga_sdk::archive::order_folder;

#[derive(Debug, Deserialize)]
pub struct ArchiveQuery {
    order_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ArchivedObject {
    name: String,
    event_id: String,
}

#[derive(Debug, Serialize)]
pub struct ArchiveListing {
    order_id: String,
    objects: Vec<ArchivedObject>,
}

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
    let timeline = state.saga.stores.timeline(&order_id).await?;
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
