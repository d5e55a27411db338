//! The component side: WIT imports as a [`Host`], and the conversions behind
//! [`crate::export_step!`].

use crate::bindings::exports::wasaga::saga::handler as wit;
#[cfg(feature = "archive")]
use crate::bindings::wasaga::saga::{archive, provenance};
use crate::bindings::wasaga::saga::{log, state};
use crate::{Context, Event, Host, Level, Origin, Step, StepError};

/// The WIT imports as a [`Host`].
pub struct WitHost;

impl Host for WitHost {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        state::put(key, value)
    }

    fn delete(&mut self, key: &str) {
        state::delete(key)
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message)
    }

    #[cfg(feature = "archive")]
    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String> {
        archive::put(name, body, content_type)
    }

    #[cfg(not(feature = "archive"))]
    fn archive_put(&mut self, _: &str, _: &[u8], _: &str) -> Result<(), String> {
        Err("this step targets the `step` world: enable wasaga-sdk's `archive` feature".to_owned())
    }

    #[cfg(feature = "archive")]
    fn origin(&self) -> Origin {
        let origin = provenance::current();
        Origin { step: origin.step, step_version: origin.step_version }
    }

    #[cfg(not(feature = "archive"))]
    fn origin(&self) -> Origin {
        Origin { step: String::new(), step_version: String::new() }
    }

    #[cfg(feature = "http")]
    fn http(&mut self, request: &crate::http::Request) -> Result<crate::http::Response, String> {
        send(request)
    }

    #[cfg(not(feature = "http"))]
    fn http(&mut self, request: &crate::http::Request) -> Result<crate::http::Response, String> {
        Err(format!(
            "{} {}: this step was built without wasaga-sdk's `http` feature, so it cannot call out",
            request.method, request.url
        ))
    }

    fn setting(&self, name: &str) -> Option<String> {
        // The host gives a step its settings as its WASI environment.
        std::env::var(name).ok()
    }
}

/// `describe` for step `S`.
pub fn describe<S: Step>() -> wit::Manifest {
    let manifest = S::manifest();
    wit::Manifest { name: manifest.name, version: manifest.version, subscribes: manifest.subscribes }
}

/// `handle` for step `S`.
pub fn handle<S: Step>(ctx: wit::Context, event: wit::Event) -> Result<Vec<wit::Emit>, wit::StepError> {
    let ctx = Context { attempt: ctx.attempt };
    let event = Event {
        id: event.id,
        kind: event.kind,
        order_id: event.order_id,
        occurred_at_ms: event.occurred_at_ms,
        payload: event.payload,
    };
    match S::handle(&mut WitHost, &ctx, &event) {
        Ok(emits) => emits.into_iter().map(emit).collect(),
        Err(StepError::Retryable(reason)) => Err(wit::StepError::Retryable(reason)),
        Err(StepError::Fatal(reason)) => Err(wit::StepError::Fatal(reason)),
    }
}

/// An event for the host: with its delay, in the current contract.
#[cfg(not(feature = "wit-0-1"))]
fn emit(e: crate::Emit) -> Result<wit::Emit, wit::StepError> {
    Ok(wit::Emit { kind: e.kind, payload: e.payload, delay_ms: e.delay_ms })
}

/// An event for the host: 0.1.0 has no timers, so a delayed event is an error, never
/// published at once.
#[cfg(feature = "wit-0-1")]
fn emit(e: crate::Emit) -> Result<wit::Emit, wit::StepError> {
    match e.delay_ms {
        None => Ok(wit::Emit { kind: e.kind, payload: e.payload }),
        Some(_) => Err(wit::StepError::Fatal(format!(
            "{} is a timer, which wasaga:saga@0.1.0 lacks: build without wasaga-sdk's `wit-0-1` feature",
            e.kind
        ))),
    }
}

#[cfg(feature = "http")]
/// `wasi:http/outgoing-handler` as a blocking call: build the request, send it, write its
/// body, wait for the answer and read its body.
pub(crate) fn send(request: &crate::http::Request) -> Result<crate::http::Response, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    let (scheme, authority, path) = crate::http::split_url(&request.url)?;
    let entries: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    let headers = Fields::from_list(&entries).map_err(|e| format!("header refused: {e:?}"))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let invalid = |what: &str| format!("{} {}: invalid {what}", request.method, request.url);
    outgoing.set_method(&method).map_err(|()| invalid("method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let body = outgoing.body().map_err(|()| invalid("body"))?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = body.write().map_err(|()| invalid("body"))?;
        for chunk in request.body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("writing the body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        Some(Err(())) | None => return Err("the answer was lost".to_owned()),
    };
    let status = response.status();
    let headers =
        response.headers().entries().into_iter().map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned())).collect();
    let incoming = response.consume().map_err(|()| "the answer has no body".to_owned())?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| "the answer has no body".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    Ok(crate::http::Response { status, headers, body: bytes })
}
