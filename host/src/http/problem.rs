//! Every HTTP error as RFC 9457 `application/problem+json`. Client errors are answered,
//! not logged as errors; a server error gets a generic body and its cause in the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use problem_details::ProblemDetails;
use serde::Serialize;

/// Extra members of a problem document.
#[derive(Debug, Serialize)]
struct Extensions {
    /// A stable, machine-readable name of the problem.
    code: &'static str,
    /// Every invalid field, for a 422 of a request body.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

/// An error, as RFC 9457 `application/problem+json`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documents the shape problem_details writes.
pub struct Problem {
    /// `about:blank`.
    r#type: Option<String>,
    title: Option<String>,
    status: Option<u16>,
    detail: Option<String>,
    /// A stable, machine-readable name of the problem.
    code: Option<String>,
    /// Every invalid field, for a 422 of a request.
    errors: Option<Vec<FieldError>>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where, e.g. `items[0].quantity`.
    pub field: String,
    pub message: String,
}

/// An error answered over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A path, query or header value the API cannot take (a control character, say).
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("this endpoint needs an Authorization: Bearer <admin token> header")]
    Unauthorized,
    #[error("the bearer token is not the admin token")]
    Forbidden,
    /// No credential where one is needed (the detail says which).
    #[error("{0}")]
    NoCredential(String),
    /// A credential that does not allow this request.
    #[error("{0}")]
    NotAllowed(String),
    /// Too many failed credentials from this client: try again after this many seconds.
    #[error("too many failed sign-ins or bearer tokens from this address; try again in {0} s")]
    TooManyFailures(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NoCredential(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotAllowed(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooManyFailures(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_failures"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match error {
            // Busy or down: the client may try again; the operator sees it in /readyz.
            error if error.is_transient() => ApiError::Unavailable(error.to_string()),
            // The data itself was refused: input that validation let through.
            StoreError::Rejected(reason) => ApiError::BadInput(format!("the store refused a value: {reason}")),
            error => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<crate::registry::RegistryError> for ApiError {
    fn from(error: crate::registry::RegistryError) -> Self {
        use crate::registry::RegistryError;
        match error {
            RegistryError::Refused(crate::runtime::LoadError::TooLarge { .. }) => {
                ApiError::PayloadTooLarge(error.to_string())
            }
            RegistryError::Refused(crate::runtime::LoadError::CompilesBusy(_)) => {
                ApiError::Unavailable(error.to_string())
            }
            RegistryError::Refused(reason) => {
                ApiError::Unprocessable { code: "step_refused", detail: format!("component refused: {reason}") }
            }
            RegistryError::UnknownStep(_) | RegistryError::VersionGone { .. } => ApiError::NotFound(error.to_string()),
            RegistryError::NoPrevious(_) | RegistryError::Contended(_) | RegistryError::NoRollout(_) => {
                ApiError::Conflict(error.to_string())
            }
            RegistryError::Store(error) => error.into(),
        }
    }
}

impl From<crate::saga::ops::OpError> for ApiError {
    fn from(error: crate::saga::ops::OpError) -> Self {
        use crate::saga::ops::OpError;
        match error {
            OpError::NoDeadLetter(_) => ApiError::NotFound(error.to_string()),
            OpError::Store(error) => error.into(),
            OpError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
            OpError::Registry(error) => error.into(),
            OpError::Transport(_) | OpError::Unreadable { .. } => ApiError::Internal(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                "the server failed to handle this request; the cause is in its log".to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            ApiError::TooManyFailures(secs) => Some(*secs),
            _ => None,
        };
        let errors = match self {
            ApiError::Invalid(errors) => errors,
            _ => Vec::new(),
        };
        let mut response = ProblemDetails::from_status_code(status)
            .with_detail(detail)
            .with_extensions(Extensions { code, errors })
            .into_response();
        if status == StatusCode::UNAUTHORIZED
            && let Ok(value) = "Bearer".parse()
        {
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, value);
        }
        if let Some(secs) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Answers axum writes itself (a method the path does not take, a body over a route's
/// limit) made problems too, so every error of the API has one shape.
pub async fn as_problem(response: Response) -> Response {
    use axum::http::header::{ALLOW, CONTENT_TYPE};
    let problem =
        response.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if problem {
        return response;
    }
    match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = response.headers().get(ALLOW).cloned();
            let detail = match allow.as_ref().and_then(|a| a.to_str().ok()) {
                Some(methods) => format!("this path takes {methods}"),
                None => "this path does not take this method".to_owned(),
            };
            let mut answer = ApiError::MethodNotAllowed(detail).into_response();
            if let Some(allow) = allow {
                answer.headers_mut().insert(ALLOW, allow);
            }
            answer
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the body is over this endpoint's limit".to_owned()).into_response()
        }
        _ => response,
    }
}
