//! Input no handler should ever see: a control character (NUL above all) in the path or
//! the query. Such a value cannot be an id, a SKU or a cursor, and some stores refuse it
//! outright, so it is answered with a 400 here, before routing, for every route.

use super::problem::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Refuse a request whose decoded path or query contains a control character.
pub async fn reject_control_characters(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let decoded_path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    if decoded_path.chars().any(char::is_control) {
        return ApiError::BadInput("the path contains a control character".to_owned()).into_response();
    }
    if let Some(query) = uri.query()
        && url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k.chars().chain(v.chars()).any(char::is_control))
    {
        return ApiError::BadInput("the query contains a control character".to_owned()).into_response();
    }
    next.run(request).await
}
