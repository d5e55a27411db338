//! The operators' console: signing in, sessions that expire, actions refused without the
//! session or its CSRF token, and the whole console driven in headless Chromium.

use crate::helpers::*;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use std::path::PathBuf;
use std::time::Duration;

/// Every console page and fragment that shows admin data, or acts.
const PRIVATE_PAGES: [&str; 10] = [
    "/ui",
    "/ui/orders",
    "/ui/orders/rows",
    "/ui/orders/counts",
    "/ui/orders/some-order",
    "/ui/steps",
    "/ui/dead-letters",
    "/ui/dead-letters/some-id/recording",
    "/ui/hosts",
    "/ui/series.json",
];

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Sign in with `token`; the session cookie (`name=value`) if it worked.
async fn sign_in(app: &Api, token: &str) -> (StatusCode, Option<String>, reqwest::header::HeaderMap) {
    let response = no_redirects()
        .post(app.url("/ui/login"))
        .form(&[("token", token), ("next", "/ui/steps")])
        .send()
        .await
        .expect("sign-in is sent");
    let headers = response.headers().clone();
    let cookie =
        headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(str::to_owned);
    (response.status(), cookie, headers)
}

async fn get_with(app: &Api, path: &str, cookie: &str) -> reqwest::Response {
    no_redirects().get(app.url(path)).header(COOKIE, cookie).send().await.expect("request is sent")
}

/// The CSRF token a console page gives htmx (`hx-headers` on `<body>`).
fn csrf_of(page: &str) -> String {
    let marker = "X-CSRF-Token&quot;:&quot;";
    let start = page.find(marker).expect("the page carries a CSRF token") + marker.len();
    let len = page[start..].find("&quot;").expect("the token ends");
    page[start..start + len].to_owned()
}

#[tokio::test]
async fn nothing_private_is_reachable_without_signing_in() {
    let app = spawn_app().await;
    for path in PRIVATE_PAGES {
        let response = no_redirects().get(app.url(path)).send().await.expect("request is sent");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path} without a session");
        let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(location.starts_with("/ui/login?next="), "{path} sends to the sign-in page, not {location}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("payment"), "{path} leaks step data to a stranger: {body}");
    }
    // htmx polling after the session ended is told to reload into the sign-in page.
    let response =
        no_redirects().get(app.url("/ui/orders/rows")).header("HX-Request", "true").send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("HX-Redirect").is_some());
    // A made-up or altered cookie is no session.
    for forged in ["wasaga_session=1", "wasaga_session=99999999999999.abc", "wasaga_session="] {
        let response = get_with(&app, "/ui/steps", forged).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{forged}");
    }
    // The sign-in page itself and the assets need nothing.
    assert_eq!(app.get("/ui/login").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ui/assets/htmx.min.js").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ui/assets/nothing.js").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signing_in_takes_the_admin_token_and_sets_an_http_only_session() {
    let app = spawn_app().await;
    let (status, cookie, _) = sign_in(&app, "not-the-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_none(), "a wrong token gets no cookie");

    let (status, cookie, headers) = sign_in(&app, &app.token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers.get(LOCATION).and_then(|v| v.to_str().ok()), Some("/ui/steps"));
    let set_cookie = headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("a session cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.contains(attribute), "the cookie is {attribute}: {set_cookie}");
    }
    let cookie = cookie.expect("cookie");
    let page = get_with(&app, "/ui/steps", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(csp.contains("script-src 'self'"), "pages load scripts from the server only: {csp}");
    let body = page.text().await.expect("body");
    for step in ["inventory", "payment", "analytics"] {
        assert!(body.contains(step), "the steps page lists {step}");
    }

    // After signing in, only a console path is followed: never another site.
    for next in ["//evil.example/ui", "https://evil.example/", "/api/admin/plugins"] {
        let response = no_redirects()
            .post(app.url("/ui/login"))
            .form(&[("token", app.token.as_str()), ("next", next)])
            .send()
            .await
            .expect("sent");
        assert_eq!(response.headers().get(LOCATION).and_then(|v| v.to_str().ok()), Some("/ui"), "next={next}");
    }
}

#[tokio::test]
async fn an_action_needs_the_session_its_csrf_token_and_this_origin() {
    let app = spawn_app().await;
    app.stock_up("SKU-1", 10).await;
    let order = app.place(&[("SKU-1", 1)], "tok_trap").await;
    let mut dead_letter = String::new();
    eventually(Duration::from_secs(30), "the trap is dead-lettered", async || {
        let list: Vec<serde_json::Value> = app.admin_get("/api/admin/dead-letters").await.json().await.expect("json");
        match list.iter().find(|d| d["event"]["order_id"] == order.as_str()) {
            Some(d) => {
                dead_letter = d["id"].as_str().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    let (_, cookie, _) = sign_in(&app, &app.token).await;
    let cookie = cookie.expect("signed in");
    let csrf = csrf_of(&get_with(&app, "/ui/dead-letters", &cookie).await.text().await.expect("page"));
    let discard = app.url(&format!("/ui/dead-letters/{dead_letter}/discard"));
    let still_there = async || {
        let list: Vec<serde_json::Value> = app.admin_get("/api/admin/dead-letters").await.json().await.expect("json");
        list.iter().any(|d| d["id"] == dead_letter.as_str())
    };

    let refused = [
        ("no session", no_redirects().post(&discard).header("X-CSRF-Token", &csrf), StatusCode::UNAUTHORIZED),
        ("no CSRF token", no_redirects().post(&discard).header(COOKIE, &cookie), StatusCode::FORBIDDEN),
        (
            "a wrong CSRF token",
            no_redirects().post(&discard).header(COOKIE, &cookie).header("X-CSRF-Token", "0".repeat(64)),
            StatusCode::FORBIDDEN,
        ),
        (
            "another origin",
            no_redirects()
                .post(&discard)
                .header(COOKIE, &cookie)
                .header("X-CSRF-Token", &csrf)
                .header("Origin", "http://evil.example"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, request, status) in refused {
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), status, "an action with {what}");
        assert!(still_there().await, "an action with {what} changed nothing");
    }

    let origin = format!("http://{}", app.addr);
    let response = no_redirects()
        .post(&discard)
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", origin)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("body").contains("Discarded"));
    assert!(!still_there().await, "the dead letter is discarded");
}

#[tokio::test]
async fn a_session_expires() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.console_session_secs = 1;
    let app = spawn_with(dir, settings).await;
    let (_, cookie, _) = sign_in(&app, &app.token).await;
    let cookie = cookie.expect("signed in");
    let first = get_with(&app, "/ui/orders", &cookie).await.status();
    // The cookie is good for a second; a slow machine may already be past it.
    assert!(first == StatusCode::OK || first == StatusCode::SEE_OTHER, "{first}");
    eventually(Duration::from_secs(10), "the session expires", async || {
        get_with(&app, "/ui/orders", &cookie).await.status() == StatusCode::SEE_OTHER
    })
    .await;
}

/// The folder the browser test saves its screenshots in.
fn screenshots_dir() -> PathBuf {
    std::env::var_os("WASAGA_TEST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wasaga-console-screenshots"))
}

#[tokio::test]
async fn the_console_in_a_browser() {
    let Some(playwright) = std::env::var_os("WASAGA_PLAYWRIGHT_DIR") else {
        panic!(
            "WASAGA_PLAYWRIGHT_DIR is not set: run the tests with `cargo xtask test`, which installs playwright-core"
        );
    };
    let chromium = std::env::var("WASAGA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let app = spawn_app().await;
    let v1 = app.plugin("payment").await.expect("payment")["digest"].as_str().unwrap_or_default().to_owned();
    let v2_file = components_dir().join("payment-v2.wasm");
    let v2 = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(component("payment-v2"))));
    let shots = screenshots_dir();
    std::fs::create_dir_all(&shots).expect("screenshots folder");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser").join("console.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("BASE_URL", app.url(""))
        .env("ADMIN_TOKEN", &app.token)
        .env("PAYMENT_V1", &v1)
        .env("PAYMENT_V2", &v2)
        .env("PAYMENT_V2_FILE", &v2_file)
        .env("PLAYWRIGHT_DIR", playwright)
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (Node.js is needed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    for page in ["sign-in", "overview", "orders", "order", "steps", "dead-letters", "hosts", "order-narrow"] {
        let file = shots.join(format!("{page}.png"));
        assert!(file.metadata().is_ok_and(|m| m.len() > 1000), "a screenshot of {page}: {}", file.display());
    }
    // What the page did, seen through the API: v1 serves again, one dead letter discarded.
    assert_eq!(app.plugin("payment").await.expect("payment")["digest"], v1.as_str());
}
