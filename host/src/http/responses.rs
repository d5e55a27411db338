//! Problem answers that many endpoints share, described once for `/api/openapi.json`;
//! an endpoint lists them before its own statuses, which take precedence.

use super::problem::Problem;

/// What any endpoint may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes answers; never built.
pub enum Common {
    /// A control character in the path or query
    #[response(status = 400, content_type = "application/problem+json")]
    ControlCharacter(Problem),
    /// The path does not take this method; `Allow` lists those it takes
    #[response(status = 405, content_type = "application/problem+json")]
    MethodNotAllowed(Problem),
    /// Busy or unavailable (a store, or no answer within WASAGA_REQUEST_TIMEOUT_MS); try again
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The admin's endpoints, to a request without the admin token.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AdminOnly {
    /// No bearer token
    #[response(status = 401, content_type = "application/problem+json")]
    NoToken(Problem),
    /// Not the admin token
    #[response(status = 403, content_type = "application/problem+json")]
    NotAdmin(Problem),
    /// Too many failed tokens from this address; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyFailures(Problem),
}

/// The order API, to a request without a client key (or the admin token) where keys are
/// configured.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ClientKeyed {
    /// No credential, and client keys are configured
    #[response(status = 401, content_type = "application/problem+json")]
    NoCredential(Problem),
    /// Too many failed tokens from this address; see Retry-After
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyFailures(Problem),
}
