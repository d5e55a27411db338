//! The page shell every console page shares, and the small formatting rules (times,
//! digests, money) the pages use.

use super::session::Session;
use axum::http::{HeaderName, HeaderValue, header};
use maud::{DOCTYPE, Markup, html};

/// The navigation entries; the current one is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Orders,
    Steps,
    DeadLetters,
    Hosts,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Orders, "/ui/orders", "Orders"),
    (Nav::Steps, "/ui/steps", "Steps"),
    (Nav::DeadLetters, "/ui/dead-letters", "Dead letters"),
    (Nav::Hosts, "/ui/hosts", "Hosts"),
];

/// htmx settings: no inline styles (the CSP forbids them), and error answers are shown
/// in place like successes, since they carry the message.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;

/// Headers of every console answer: nothing cached, no framing, scripts and styles only
/// from this server.
pub fn headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ),
    ]
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · wasaga" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/ui/assets/uPlot.min.css";
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/htmx.min.js" defer {}
            script src="/ui/assets/uPlot.min.js" defer {}
            script src="/ui/assets/console.js" defer {}
        }
    }
}

/// A page of the signed-in console.
pub fn page(title: &str, current: Nav, session: &Session, content: Markup) -> Markup {
    // htmx sends these headers with every request it makes from the page.
    let csrf = serde_json::json!({ "X-CSRF-Token": session.csrf }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-headers=(csrf) {
                header.top {
                    a.brand href="/ui" { "wasaga" }
                    nav {
                        @for (nav, href, label) in NAV {
                            a href=(href) class=[(nav == current).then_some("current")] { (label) }
                        }
                    }
                    button.link hx-post="/ui/logout" { "Sign out" }
                }
                main #content { (content) }
            }
        }
    }
}

/// The sign-in page, with an error when the last attempt failed.
pub fn sign_in(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.sign-in {
                main {
                    h1 { "wasaga" }
                    form method="post" action="/ui/login" {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        input type="hidden" name="next" value=(next);
                        @if let Some(error) = error {
                            p.error role="alert" { (error) }
                        }
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "The token is in " code { "<data dir>/admin-token" } " unless WASAGA_ADMIN_TOKEN sets it." }
                }
            }
        }
    }
}

/// A message above a section, after an action.
pub enum Flash {
    Done(String),
    Error(String),
    /// A message with details (a dry run's result).
    Details(String, String),
}

pub fn flash(flash: Flash) -> Markup {
    match flash {
        Flash::Done(text) => html! { div.flash.done role="status" { (text) } },
        Flash::Error(text) => html! { div.flash.error role="alert" { (text) } },
        Flash::Details(text, details) => html! {
            div.flash.done role="status" { (text) pre { (details) } }
        },
    }
}

/// `2026-11-27 20:10:03.123` (UTC) of milliseconds since the epoch.
pub fn at(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A duration in milliseconds, readable: `850 ms`, `2.4 s`, `3 min`.
pub fn took(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{} min", ms / 60_000),
        ms => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// The first 12 hex digits of a `sha256:` digest, with the full digest on hover.
pub fn digest(full: &str) -> Markup {
    let short = full.strip_prefix("sha256:").map(|hex| &hex[..hex.len().min(12)]).unwrap_or(full);
    html! { code.digest title=(full) { (short) } }
}

/// Cents as `12.50`.
pub fn money(cents: i64) -> String {
    format!("{}{}.{:02}", if cents < 0 { "-" } else { "" }, cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

/// An order status as a badge.
pub fn status(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

/// A table that scrolls sideways in a narrow window instead of overflowing it.
pub fn scroll(table: Markup) -> Markup {
    html! { div.scroll { (table) } }
}

/// A section again with an action's outcome above it; a failure keeps its status.
pub async fn after<F>(
    result: Result<Flash, super::UiError>,
    section: impl FnOnce(Flash) -> F,
) -> axum::response::Response
where
    F: std::future::Future<Output = Result<Markup, super::UiError>>,
{
    use axum::response::IntoResponse;
    let (status, flash) = match result {
        Ok(flash) => (axum::http::StatusCode::OK, flash),
        Err(super::UiError(error)) => {
            let (status, _) = error.status_and_code();
            (status, Flash::Error(error.to_string()))
        }
    };
    match section(flash).await {
        Ok(markup) => (status, markup).into_response(),
        Err(error) => error.into_response(),
    }
}
