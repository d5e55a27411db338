//! Traces: two hosts of a fleet export spans over OTLP to a receiver run by the test;
//! every order is one trace (its POST, each hop of its events, each step call and each
//! host transition), whichever host handled each part.

use crate::crash::Server;
use crate::helpers::*;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use parking_lot::Mutex;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A span as the test sees it: trace id, name, string attributes.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP receiver on a random port, keeping every span it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    let mut kept = kept.lock();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                let attributes = span
                                    .attributes
                                    .iter()
                                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                        AnyValue::StringValue(s) => Some((kv.key.clone(), s.clone())),
                                        AnyValue::IntValue(i) => Some((kv.key.clone(), i.to_string())),
                                        _ => None,
                                    })
                                    .collect();
                                kept.push(Span { trace: hex::encode(&span.trace_id), name: span.name, attributes });
                            }
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_one_trace_across_hosts_and_steps() {
    let (endpoint, spans) = receiver().await;
    let url = fresh_pg_database().await;
    let archive = tempfile::tempdir().expect("shared archive");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ("WASAGA_ARCHIVE_URL", format!("file://{}", archive.path().display())),
    ];
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let servers: Vec<Server> = dirs.iter().map(|d| Server::start_env(d.path(), Some(&url), &token, &env)).collect();
    for server in &servers {
        server.api.wait_ready().await;
    }
    servers[0].api.stock_up("SKU-1", 100).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(servers[i % 2].api.place(&[("SKU-1", 1)], "tok_ok").await);
    }
    for id in &ids {
        eventually(Duration::from_secs(60), "the order completes", async || {
            servers[0].api.order(id).await["status"] == "completed"
        })
        .await;
    }
    let of_order = |id: &str| -> Vec<Span> {
        spans.lock().iter().filter(|s| s.attributes.get("order_id").is_some_and(|o| o == id)).cloned().collect()
    };
    for id in &ids {
        eventually(Duration::from_secs(30), "the order's spans arrive", async || {
            let names: BTreeSet<String> = of_order(id).iter().map(|s| s.name.clone()).collect();
            let steps: BTreeSet<String> = of_order(id)
                .iter()
                .filter(|s| s.name == "step.call")
                .filter_map(|s| s.attributes.get("step").cloned())
                .collect();
            // On the embedded transport each hop is queued with the commit that wrote it.
            names.contains("order.place")
                && names.contains("transport.queue")
                && names.contains("order.transition")
                && ["inventory", "payment", "analytics"].iter().all(|s| steps.contains(*s))
        })
        .await;
        let traces: BTreeSet<String> = of_order(id).iter().map(|s| s.trace.clone()).collect();
        assert_eq!(traces.len(), 1, "order {id} is in {} traces", traces.len());
        for call in of_order(id).iter().filter(|s| s.name == "step.call") {
            for field in ["step_version", "attempt", "outcome"] {
                assert!(call.attributes.contains_key(field), "a step call span without {field}: {call:?}");
            }
        }
    }
    let hosts: BTreeSet<String> = spans.lock().iter().filter_map(|s| s.attributes.get("host").cloned()).collect();
    assert_eq!(hosts.len(), 2, "spans from both hosts: {hosts:?}");
}
