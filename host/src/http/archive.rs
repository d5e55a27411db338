//! `GET /api/admin/archive?order_id=…`: the archived events of an order, read back from
//! the archive itself (not from the store), so what it lists is what was written.

use super::AppState;
use super::body::Checker;
use super::problem::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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

/// The folder of an order's events on the UTC day of `at_ms`, as the analytics step
/// names them: `events/{yyyy}/{mm}/{dd}/{order_id}/`.
pub fn day_prefix(order_id: &str, at_ms: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(at_ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("events/{:04}/{:02}/{:02}/{order_id}/", at.year(), u8::from(at.month()), at.day())
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
    let prefixes: BTreeSet<String> = timeline.iter().map(|row| day_prefix(&order_id, row.at_ms)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_use_the_utc_day_of_the_event() {
        assert_eq!(day_prefix("o-1", 0), "events/1970/01/01/o-1/");
        assert_eq!(day_prefix("o-1", 1_795_996_799_999), "events/2026/11/29/o-1/");
    }
}
