//! Who may read and act on orders, and the console's sessions, tested as an attacker
//! would: no credential, a client key without the scope, a guessed token, a cookie kept
//! after signing out, a server opened to the network without any client key.

use crate::helpers::*;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use wasaga_host::config::{ClientSettings, Scope, SecureCookie, Settings};
use wasaga_host::server::App;

/// A key that may place and read orders, not cancel them.
const SHOP_KEY: &str = "shop-key-0123456789abcdef";
/// A key that may only read.
const READER_KEY: &str = "reader-key-0123456789abcdef";

fn clients() -> BTreeMap<String, ClientSettings> {
    let client =
        |token: &str, scopes: &[Scope]| ClientSettings { token: token.to_owned().into(), scopes: scopes.to_vec() };
    BTreeMap::from([
        ("shop".to_owned(), client(SHOP_KEY, &[Scope::Place, Scope::Read])),
        ("reader".to_owned(), client(READER_KEY, &[Scope::Read])),
    ])
}

/// A saga server with `change` applied to its settings.
async fn spawn_changed(change: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    change(&mut settings);
    spawn_with(dir, settings).await
}

async fn send(request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::Response {
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    request.send().await.expect("request is sent")
}

/// The status, after checking a refusal is problem+json with a stable code.
async fn status_of(response: reqwest::Response) -> u16 {
    let status = response.status().as_u16();
    if status >= 400 {
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(content_type, "application/problem+json", "a {status} is a problem document");
        let body: serde_json::Value = response.json().await.expect("problem json");
        assert!(body["code"].is_string() && body["detail"].is_string(), "{body}");
    }
    status
}

#[tokio::test]
async fn the_order_list_is_the_admins_alone_even_on_loopback() {
    let app = spawn_app().await;
    let id = app.place(&[("SKU-1", 1)], "tok_ok").await;
    let list = || app.http.get(app.url("/api/orders"));
    let response = send(list(), None).await;
    assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    assert_eq!(status_of(response).await, 401, "no credential");
    assert_eq!(status_of(send(list(), Some("a-guess-at-the-token")).await).await, 403, "a wrong token");
    let response = send(list(), Some(app.token.as_str())).await;
    assert_eq!(response.status(), 200);
    let page: serde_json::Value = response.json().await.expect("json");
    assert!(page["orders"].as_array().is_some_and(|o| o.iter().any(|o| o["order_id"] == id)));
    // With no client configured on loopback, one's own order stays open to read and cancel.
    assert_eq!(app.order(&id).await["order_id"], id.as_str());
}

#[tokio::test]
async fn with_client_keys_every_order_call_needs_a_key_with_its_scope() {
    let app = spawn_changed(|settings| settings.clients = clients()).await;
    app.stock_up("SKU-1", 10).await;
    let body = order_body(&[("SKU-1", 1)], "tok_ok");
    let place = || app.http.post(app.url("/api/orders")).json(&body);
    assert_eq!(status_of(send(place(), None).await).await, 401, "place without a key");
    assert_eq!(status_of(send(place(), Some(READER_KEY)).await).await, 403, "place with a read-only key");
    assert_eq!(status_of(send(place(), Some("not-a-key-of-anyone-here")).await).await, 403, "place with a guess");
    let response = send(place(), Some(SHOP_KEY)).await;
    assert_eq!(response.status(), 202, "the shop places");
    let placed: serde_json::Value = response.json().await.expect("json");
    let id = placed["order_id"].as_str().expect("order id").to_owned();
    let response = send(place(), Some(app.token.as_str())).await;
    assert_eq!(response.status(), 202, "the admin token may do everything");

    let read = || app.http.get(app.url(&format!("/api/orders/{id}")));
    assert_eq!(status_of(send(read(), None).await).await, 401, "read without a key");
    for key in [READER_KEY, SHOP_KEY, app.token.as_str()] {
        assert_eq!(send(read(), Some(key)).await.status(), 200, "read with a key that may");
    }

    let list = || app.http.get(app.url("/api/orders"));
    assert_eq!(status_of(send(list(), None).await).await, 401, "list without a key");
    assert_eq!(status_of(send(list(), Some(SHOP_KEY)).await).await, 403, "a client key never lists every customer");
    assert_eq!(send(list(), Some(app.token.as_str())).await.status(), 200);

    let cancel = || app.http.post(app.url(&format!("/api/orders/{id}/cancel")));
    assert_eq!(status_of(send(cancel(), None).await).await, 401, "cancel without a key");
    let response = send(cancel(), Some(SHOP_KEY)).await;
    assert_eq!(response.status(), 403, "the shop lacks the cancel scope");
    let refusal: serde_json::Value = response.json().await.expect("json");
    assert!(refusal["detail"].as_str().is_some_and(|d| d.contains("shop") && d.contains("cancel")), "{refusal}");
    let order: serde_json::Value = send(read(), Some(READER_KEY)).await.json().await.expect("json");
    assert_ne!(order["status"], "cancelled", "a refused cancel did nothing");
    assert_eq!(send(cancel(), Some(app.token.as_str())).await.status(), 202, "the admin cancels");
}

#[tokio::test]
async fn a_server_reachable_from_other_machines_refuses_to_start_without_a_client_key() {
    // In the process: the server is never built.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(&dir, None);
    settings.http_addr = "0.0.0.0:0".parse().expect("address");
    let error = App::build(settings).await.err().expect("refused").to_string();
    assert!(error.contains("WASAGA_HTTP_ADDR") && error.contains("[clients.NAME]"), "{error}");

    // As a process: `wasaga serve` exits at once, naming the setting.
    let output = Command::new(env!("CARGO_BIN_EXE_wasaga"))
        .arg("serve")
        .env("WASAGA_HTTP_ADDR", "0.0.0.0:0")
        .env("WASAGA_DATA_DIR", dir.path().join("data"))
        .env("WASAGA_PLUGINS_DIR", dir.path().join("plugins"))
        .env("WASAGA_ADMIN_TOKEN", "an-admin-token")
        .output()
        .expect("wasaga runs");
    assert!(!output.status.success(), "a server open to the network started without a client key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WASAGA_HTTP_ADDR") && stderr.contains("[clients.NAME]"), "{stderr}");
}

#[tokio::test]
async fn a_client_key_from_the_environment_opens_a_server_to_the_network() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let config = dir.path().join("wasaga.toml");
    std::fs::write(&config, "[clients.shop]\ntoken = \"env:TEST_SHOP_KEY\"\nscopes = [\"read\"]\n").expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasaga"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("WASAGA_HTTP_ADDR", "0.0.0.0:0")
        .env("WASAGA_DATA_DIR", dir.path().join("data"))
        .env("WASAGA_PLUGINS_DIR", dir.path().join("plugins"))
        .env("WASAGA_ADMIN_TOKEN", "an-admin-token")
        .env("TEST_SHOP_KEY", SHOP_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasaga starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("wasaga is listening")
                && let Some(addr) = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next())
            {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr: std::net::SocketAddr =
        rx.recv_timeout(Duration::from_secs(120)).expect("listening").parse().expect("addr");
    let url = format!("http://127.0.0.1:{}/api/orders/nope", addr.port());
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.expect("sent").status(), 401, "no key");
    assert_eq!(
        http.get(&url).bearer_auth(SHOP_KEY).send().await.expect("sent").status(),
        404,
        "the key from the environment"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn failed_tokens_and_sign_ins_are_limited_per_address() {
    let app = spawn_changed(|settings| settings.auth_failures_per_minute = 3).await;
    let admin = || app.http.get(app.url("/api/admin/plugins"));
    for _ in 0..2 {
        assert_eq!(send(admin(), Some("guess-one")).await.status(), 403);
    }
    let sign_in = app.http.post(app.url("/ui/login")).form(&[("token", "guess-two")]).send().await.expect("sent");
    assert_eq!(sign_in.status(), 401, "a wrong sign-in counts too");
    let response = send(admin(), Some("guess-three")).await;
    assert!(response.headers().contains_key(RETRY_AFTER));
    assert_eq!(status_of(response).await, 429, "over the budget");
    // Over the budget, even the right token is not looked at: guessing gains nothing.
    assert_eq!(send(admin(), Some(app.token.as_str())).await.status(), 429);
    let sign_in =
        app.http.post(app.url("/ui/login")).form(&[("token", app.token.as_str())]).send().await.expect("sent");
    assert_eq!(sign_in.status(), 429);
    // Another address has its own budget.
    let elsewhere =
        reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().expect("client");
    let response = elsewhere.get(app.url("/api/admin/plugins")).bearer_auth(&app.token).send().await.expect("sent");
    assert_eq!(response.status(), 200, "another client is not locked out");
    // Requests without a credential guess nothing and are not refused.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_token_is_compared_the_same_way_configured_and_presented() {
    // A token set from a file often ends with a newline: the presented one never does.
    let app =
        spawn_changed(|settings| settings.admin_token = Some("admin-token-from-a-file\n".to_owned().into())).await;
    let response = app.http.get(app.url("/api/admin/plugins")).bearer_auth("admin-token-from-a-file").send().await;
    assert_eq!(response.expect("sent").status(), 200);
    let sign_in = no_redirects()
        .post(app.url("/ui/login"))
        .form(&[("token", "admin-token-from-a-file")])
        .send()
        .await
        .expect("sent");
    assert_eq!(sign_in.status(), StatusCode::SEE_OTHER, "the console takes the same token");
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Sign in; the `Set-Cookie` header and the cookie (`name=value`).
async fn sign_in(app: &Api, forwarded_proto: Option<&str>) -> (String, String) {
    let mut request = no_redirects().post(app.url("/ui/login")).form(&[("token", app.token.as_str())]);
    if let Some(proto) = forwarded_proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "signed in");
    let set_cookie = response.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).expect("cookie").to_owned();
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    (set_cookie, cookie)
}

#[tokio::test]
async fn signing_out_revokes_the_session_on_the_server() {
    let app = spawn_app().await;
    let (_, cookie) = sign_in(&app, None).await;
    let (_, other_cookie) = sign_in(&app, None).await;
    let page = no_redirects().get(app.url("/ui/steps")).header(COOKIE, &cookie).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.expect("page");
    let marker = "X-CSRF-Token&quot;:&quot;";
    let start = page.find(marker).expect("a CSRF token") + marker.len();
    let csrf = &page[start..start + page[start..].find("&quot;").expect("its end")];
    let logout =
        no_redirects().post(app.url("/ui/logout")).header(COOKIE, &cookie).header("x-csrf-token", csrf).send().await;
    assert_eq!(logout.expect("sent").status(), StatusCode::NO_CONTENT);
    // The browser forgot the cookie; a copy of it is refused all the same.
    let htmx = no_redirects().get(app.url("/ui/orders/rows")).header(COOKIE, &cookie).header("HX-Request", "true");
    assert_eq!(htmx.send().await.expect("sent").status(), StatusCode::UNAUTHORIZED);
    let action = no_redirects()
        .post(app.url("/ui/steps/payment/rollback"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await;
    assert_eq!(action.expect("sent").status(), StatusCode::UNAUTHORIZED);
    let page = no_redirects().get(app.url("/ui/steps")).header(COOKIE, &cookie).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "sent to the sign-in page");
    // Another sign-in is not signed out with it.
    let page = no_redirects().get(app.url("/ui/steps")).header(COOKIE, &other_cookie).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_session_cookie_is_secure_behind_https() {
    let app = spawn_app().await;
    let (plain, _) = sign_in(&app, None).await;
    assert!(!plain.contains("Secure"), "plain HTTP on loopback: {plain}");
    let (behind_https, _) = sign_in(&app, Some("https")).await;
    assert!(behind_https.contains("Secure"), "the proxy says HTTPS: {behind_https}");
    let always = spawn_changed(|settings| settings.console_secure_cookie = SecureCookie::Always).await;
    let (set_cookie, _) = sign_in(&always, None).await;
    assert!(set_cookie.contains("Secure"), "configured always: {set_cookie}");
    let never = spawn_changed(|settings| settings.console_secure_cookie = SecureCookie::Never).await;
    let (set_cookie, _) = sign_in(&never, Some("https")).await;
    assert!(!set_cookie.contains("Secure"), "configured never: {set_cookie}");
}

#[tokio::test]
async fn metrics_may_have_an_address_of_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.metrics_addr = Some("127.0.0.1:0".parse().expect("address"));
    let app = App::build(settings).await.expect("app builds");
    let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr().expect("a metrics address"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::new();
    let metrics = http.get(format!("http://{metrics_addr}/metrics")).send().await.expect("sent");
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "Prometheus text, not {content_type}");
    let on_api = http.get(format!("http://{addr}/metrics")).send().await.expect("sent");
    assert_eq!(on_api.status(), 404, "not on the API's address");
    assert_eq!(http.get(format!("http://{metrics_addr}/api/orders")).send().await.expect("sent").status(), 404);
    let _ = tx.send(());
    server.await.expect("joins").expect("stops cleanly");
}

#[tokio::test]
async fn the_openapi_description_says_who_may_call_each_order_route() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/api/openapi.json").await.json().await.expect("json");
    let schemes = &doc["components"]["securitySchemes"];
    assert!(schemes["admin_token"].is_object() && schemes["client_key"].is_object(), "{schemes}");
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(security("/api/orders", "get"), serde_json::json!([{"admin_token": []}]), "the list");
    for (path, method, scope) in [
        ("/api/orders", "post", "place"),
        ("/api/orders/{id}", "get", "read"),
        ("/api/orders/{id}/cancel", "post", "cancel"),
    ] {
        let security = security(path, method);
        let allows = |wanted: &serde_json::Value| security.as_array().is_some_and(|s| s.contains(wanted));
        assert!(allows(&serde_json::json!({"client_key": [scope]})), "{method} {path}: {security}");
        assert!(allows(&serde_json::json!({"admin_token": []})), "{method} {path}: {security}");
        let refusals = &doc["paths"][path][method]["responses"];
        for status in ["401", "403", "429"] {
            assert!(refusals[status].is_object(), "{method} {path} documents {status}");
        }
    }
}
