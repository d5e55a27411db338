//! The admin API over HTTP: auth, listing, upload, rollback, and problem+json errors.

use crate::helpers::*;

async fn problem(response: reqwest::Response) -> serde_json::Value {
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.expect("problem body is JSON")
}

#[tokio::test]
async fn a_running_server_lists_the_three_steps() {
    let app = spawn_app().await;
    let plugins = app.plugins().await;
    let names: Vec<&str> = plugins.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["analytics", "inventory", "payment"]);
    for plugin in &plugins {
        assert!(plugin["digest"].as_str().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71), "{plugin}");
        assert!(plugin["version"].as_str().is_some_and(|v| semver::Version::parse(v).is_ok()), "{plugin}");
        assert!(plugin["loaded_at"].is_string(), "{plugin}");
        assert!(plugin["subscribes"].as_array().is_some_and(|s| !s.is_empty()), "{plugin}");
        assert!(plugin["previous"].is_null(), "{plugin}");
    }
    let analytics = &plugins[0];
    assert_eq!(analytics["subscribes"], serde_json::json!(["*"]));
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);
    // Step calls are measured from the first one on.
    app.stock_up("SKU-1", 1).await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics text");
    assert!(metrics.contains("wasaga_step_call_seconds_count{step=\"inventory\""), "{metrics}");
    // Batches are counted in deliveries, with buckets made for counts (not seconds).
    assert!(metrics.contains("wasaga_batch_deliveries_bucket{consumer=\"inventory\",le=\"64\"}"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/api/admin/plugins")).send().await.expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(problem(response).await["status"], 401);
    let response = app.http.get(app.url("/api/admin/plugins")).bearer_auth("wrong").send().await.expect("sent");
    assert_eq!(response.status(), 403);
    let response = app
        .http
        .put(app.url("/api/admin/plugins/payment"))
        .header("content-type", "application/wasm")
        .body(component("echo-v1"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_upload_is_refused_with_the_reason_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app.plugin("payment").await.expect("payment");
    for (bytes, reason) in [
        (bytes::Bytes::from_static(b"not wasm at all"), "not a WebAssembly file"),
        (component("hostile"), "names the step \"hostile\""),
        (component("sockets"), "wasi:sockets/"),
    ] {
        let response = app.upload("payment", bytes).await;
        assert_eq!(response.status(), 422);
        let body = problem(response).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{detail}");
    }
    assert_eq!(app.plugin("payment").await.expect("payment"), before);

    let response = app
        .http
        .put(app.url("/api/admin/plugins/payment"))
        .bearer_auth(&app.token)
        .header("content-type", "text/plain")
        .body(component("payment"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 415);
    app.stop().await;
}

#[tokio::test]
async fn upload_swaps_and_rollback_restores() {
    let app = spawn_app().await;
    let response = app.upload("echo", component("echo-v1")).await;
    assert_eq!(response.status(), 200);
    let entry: serde_json::Value = response.json().await.expect("json");
    assert_eq!(entry["version"], "1.0.0");
    assert!(entry["previous"].is_null());

    let response = app.upload("echo", component("echo-v2")).await;
    assert_eq!(response.status(), 200);
    let entry: serde_json::Value = response.json().await.expect("json");
    assert_eq!(entry["version"], "2.0.0");
    assert_eq!(entry["previous"]["version"], "1.0.0");

    let response = app.rollback("echo").await;
    assert_eq!(response.status(), 200);
    let entry: serde_json::Value = response.json().await.expect("json");
    assert_eq!(entry["version"], "1.0.0");
    assert_eq!(entry["previous"]["version"], "2.0.0");
    assert_eq!(app.plugin("echo").await.expect("echo")["version"], "1.0.0");

    assert_eq!(app.rollback("nosuchstep").await.status(), 404);
    assert_eq!(app.rollback("inventory").await.status(), 409);
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_problem_documents() {
    let app = spawn_app().await;
    let response = app.get("/api/nothing-here").await;
    assert_eq!(response.status(), 404);
    assert_eq!(problem(response).await["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_saga_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins dir");
    let app = spawn_app_in(dir).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = problem(response).await;
    assert!(body["detail"].as_str().unwrap_or_default().contains("payment"), "{body}");
    install_saga_steps(&app.plugins_dir());
    eventually(std::time::Duration::from_secs(30), "ready", async || app.get("/readyz").await.status() == 200).await;
    app.stop().await;
}

#[tokio::test]
async fn every_route_is_described_once_and_the_routers_own_errors_are_problems() {
    let dir = tempfile::tempdir().expect("temp dir");
    install_saga_steps(&dir.path().join("plugins"));
    let mut settings = test_settings(&dir, None);
    settings.max_component_mib = 2;
    let app = spawn_with(dir, settings).await;

    let doc: serde_json::Value = app.get("/api/openapi.json").await.json().await.expect("json");
    for path in [
        "/api/orders",
        "/api/orders/{id}",
        "/api/orders/{id}/cancel",
        "/api/stock/{sku}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/openapi.json",
        "/api/admin/plugins",
        "/api/admin/plugins/{name}",
        "/api/admin/plugins/{name}/rollback",
        "/api/admin/plugins/{name}/promote",
        "/api/admin/plugins/{name}/shadow",
        "/api/admin/plugins/{name}/history",
        "/api/admin/hosts",
        "/api/admin/dead-letters",
        "/api/admin/dead-letters/{id}",
        "/api/admin/dead-letters/{id}/replay",
        "/api/admin/dead-letters/{id}/recording",
        "/api/admin/recordings",
        "/api/admin/archive",
        "/api/hooks/{step}",
    ] {
        let operations = doc["paths"][path].as_object().unwrap_or_else(|| panic!("{path} is described"));
        for (method, operation) in operations {
            for status in ["400", "405", "503"] {
                assert!(operation["responses"][status].is_object(), "{method} {path} describes {status}");
            }
        }
    }
    let history = &doc["paths"]["/api/admin/plugins/{name}/history"]["get"]["responses"]["200"];
    assert_eq!(
        history["content"]["application/json"]["schema"]["items"]["$ref"], "#/components/schemas/HistoryView",
        "{history}"
    );
    assert_eq!(doc["components"]["schemas"]["HistoryView"]["properties"]["at"]["format"], "date-time");

    // A method the path does not take, and a body over the upload limit: problems, not
    // axum's plain text.
    let wrong_method = app.http.delete(app.url("/api/orders")).send().await.expect("sent");
    assert_eq!(wrong_method.status(), 405);
    let allow = wrong_method.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    assert_eq!(problem(wrong_method).await["status"], 405);
    let too_big = app
        .http
        .put(app.url("/api/admin/plugins/payment"))
        .bearer_auth(&app.token)
        .header("content-type", "application/wasm")
        .body(vec![0u8; 3 * 1024 * 1024])
        .send()
        .await
        .expect("sent");
    assert_eq!(too_big.status(), 413);
    assert_eq!(problem(too_big).await["status"], 413);

    // The history's times are RFC 3339.
    let upload = app.upload("payment", component("payment-v2")).await;
    assert_eq!(upload.status(), 200);
    let history: Vec<serde_json::Value> =
        app.admin_get("/api/admin/plugins/payment/history").await.json().await.expect("json");
    assert!(!history.is_empty(), "the upload is in the history");
    for entry in &history {
        let at = entry["at"].as_str().unwrap_or_else(|| panic!("a time, not {entry}"));
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{at} is not RFC 3339: {e}"));
    }
    app.stop().await;
}
