//! Logging, metrics and traces, set up once per process.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP
//! (HTTP/protobuf). Each event carries the W3C `traceparent` of the span that emitted it
//! (in the outbox, on the wire and in broker headers), and the span that handles it takes
//! that as its parent: an order is one trace, across the outbox, the brokers, every step
//! call and every host.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go.
pub enum Sink {
    Stderr,
    /// Discard everything (tests, unless `TEST_LOG` is set).
    Quiet,
}

static TRACING: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Install the global subscriber; later calls do nothing. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP.
pub fn init(default_filter: &str, sink: Sink) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only on a terminal: piped logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi);
    let fmt = match sink {
        Sink::Stderr => fmt.with_writer(std::io::stderr).boxed(),
        Sink::Quiet => fmt.with_writer(std::io::sink).boxed(),
    };
    let otel = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| otlp_layer());
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
}

use tracing_subscriber::Layer as _;

#[cfg(feature = "otlp")]
fn otlp_layer<S>() -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("cannot export traces to OTEL_EXPORTER_OTLP_ENDPOINT: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("wasaga").build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("wasaga");
    let _ = PROVIDER.set(provider);
    TRACING.store(true, Ordering::Relaxed);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Without the `otlp` feature no span leaves the process: say so once.
#[cfg(not(feature = "otlp"))]
fn otlp_layer<S>() -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    eprintln!("{}", crate::features::missing("OTEL_EXPORTER_OTLP_ENDPOINT (exporting traces)", "otlp"));
    None
}

/// Export the spans still buffered (at a clean stop).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    }
}

/// Whether spans are exported: when not, no trace context is carried.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// The `traceparent` of the current span, when tracing is on.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`, when tracing is on.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !tracing_enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Make `span` a child of the span `traceparent` names (an event's emitter).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| tracing_enabled()) else { return };
    let carrier: HashMap<String, String> = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The trace id in a `traceparent`, for log lines.
pub fn trace_id(traceparent: Option<&str>) -> &str {
    traceparent.and_then(|t| t.split('-').nth(1)).unwrap_or("")
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1, 0.5, 1.0,
            ])
            // Counts, not seconds: how full a consumer's batches are.
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("wasaga_batch_deliveries".to_owned()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
            })
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
