//! Request bodies: the content type, size and JSON syntax checks shared by every
//! endpoint, and a validator that lists every invalid field at once.

use super::problem::{ApiError, FieldError};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::{Map, Value};

/// The largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// A JSON object body, checked for content type (415), size (413) and syntax (400).
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the body as Content-Type: application/json (got {content_type:?})"
            )));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("the body is larger than {MAX_JSON_BYTES} bytes"))
            } else {
                ApiError::BadRequest(format!("cannot read the body: {rejection}"))
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BadRequest("the body must be a JSON object".to_owned())),
            Err(e) => Err(ApiError::BadRequest(format!("the body is not valid JSON: {e}"))),
        }
    }
}

/// Collects every problem of a body, then fails once with all of them.
#[derive(Default)]
pub struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    /// Flag every member of `object` not in `known`.
    pub fn only(&mut self, object: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            self.fail(&join(prefix, key), "unknown field");
        }
    }

    /// A required non-empty string of at most `max` characters.
    pub fn string(&mut self, object: &Map<String, Value>, prefix: &str, key: &str, max: usize) -> Option<String> {
        let field = join(prefix, key);
        match object.get(key) {
            None | Some(Value::Null) => self.fail(&field, "is required"),
            Some(Value::String(s)) if s.trim().is_empty() => self.fail(&field, "must not be empty"),
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                self.fail(&field, "must not contain control characters")
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.fail(&field, format!("must be at most {max} characters"))
            }
            Some(Value::String(s)) => return Some(s.clone()),
            Some(_) => self.fail(&field, "must be a string"),
        }
        None
    }

    /// A required integer in `min..=max`.
    pub fn integer(&mut self, object: &Map<String, Value>, prefix: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        let field = join(prefix, key);
        match object.get(key) {
            None | Some(Value::Null) => self.fail(&field, "is required"),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if v < min => self.fail(&field, format!("must be at least {min}")),
                Some(v) if v > max => self.fail(&field, format!("must be at most {max}")),
                Some(v) => return Some(v),
                None => self.fail(&field, "must be a whole number"),
            },
            Some(_) => self.fail(&field, "must be a number"),
        }
        None
    }

    /// A required object.
    pub fn object<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        let field = join(prefix, key);
        match object.get(key) {
            None | Some(Value::Null) => self.fail(&field, "is required"),
            Some(Value::Object(map)) => return Some(map),
            Some(_) => self.fail(&field, "must be an object"),
        }
        None
    }

    /// A required array of `min..=max` elements.
    pub fn array<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        prefix: &str,
        key: &str,
        min: usize,
        max: usize,
    ) -> Option<&'a Vec<Value>> {
        let field = join(prefix, key);
        match object.get(key) {
            None | Some(Value::Null) => self.fail(&field, "is required"),
            Some(Value::Array(items)) if items.len() < min => {
                self.fail(&field, format!("must have at least {min} element(s)"))
            }
            Some(Value::Array(items)) if items.len() > max => {
                self.fail(&field, format!("must have at most {max} elements"))
            }
            Some(Value::Array(items)) => return Some(items),
            Some(_) => self.fail(&field, "must be an array"),
        }
        None
    }

    /// `Ok` if nothing failed, else every problem.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(ApiError::Invalid(self.errors)),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}
