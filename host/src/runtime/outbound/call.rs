//! One call's requests: numbered as sent, checked against the list and the budgets,
//! given the host's idempotency key and secret headers, then sent, answered from a
//! recording, or refused, and recorded.

use super::policy::InternalAddress;
use super::{IDEMPOTENCY_KEY, Network, StepNet};
use crate::runtime::CallError;
use crate::runtime::limits::{CallLimits, LimitExceeded};
use crate::runtime::recorder::Recorder;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{HOST, TRANSFER_ENCODING};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use wasaga_sdk::recording::{Bytes as RecordedBytes, HostCall, HttpAnswer};
use wasmtime_wasi_http::{Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks};

enum Mode {
    Closed(&'static str),
    Live,
    /// The recorded exchanges not answered yet.
    Recorded(Mutex<Vec<HostCall>>),
}

/// One call's outbound state, shared with the requests in flight.
pub(crate) struct CallNet {
    net: Arc<StepNet>,
    event_id: String,
    mode: Mode,
    deadline: Instant,
    limits: CallLimits,
    recorder: Option<Arc<Recorder>>,
    /// The step's environment.
    settings: Vec<(String, String)>,
    sent: Mutex<usize>,
    failure: Mutex<Option<CallError>>,
}

impl CallNet {
    pub(crate) fn new(
        net: Arc<StepNet>,
        event_id: &str,
        network: Network<'_>,
        deadline: Instant,
        limits: CallLimits,
        recorder: Option<Arc<Recorder>>,
    ) -> Arc<CallNet> {
        let mode = match network {
            Network::Closed(why) => Mode::Closed(why),
            Network::Live => Mode::Live,
            Network::Recorded { calls, .. } => Mode::Recorded(Mutex::new(
                calls.iter().filter(|c| matches!(c, HostCall::Http { .. })).cloned().collect(),
            )),
        };
        let settings = match network {
            Network::Recorded { settings: Some(settings), .. } => settings.to_vec(),
            _ => net.policy.env.clone(),
        };
        if let Some(recorder) = &recorder {
            recorder.note_settings(&settings);
        }
        Arc::new(CallNet {
            net,
            event_id: event_id.to_owned(),
            mode,
            deadline,
            limits,
            recorder,
            settings,
            sent: Mutex::new(0),
            failure: Mutex::new(None),
        })
    }

    /// The step's settings, as its environment.
    pub(crate) fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// What failed the call, whatever the step made of the error it was given.
    pub(crate) fn failure(&self) -> Option<CallError> {
        self.failure.lock().clone()
    }

    /// Fail the call with `error` (the first failure wins) and give the step an error
    /// that says the same.
    fn fail(&self, error: CallError) -> HttpError {
        let message = error.to_string();
        self.failure.lock().get_or_insert(error);
        HttpError::InternalError(Some(message))
    }

    fn record(&self, call: HostCall) {
        if let Some(recorder) = &self.recorder {
            recorder.record(call);
        }
    }

    async fn send(
        self: Arc<Self>,
        n: usize,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let (parts, mut body) = request.into_parts();
        let method = parts.method.clone();
        let url = parts.uri.to_string();
        if n >= self.limits.http_requests {
            let limit = LimitExceeded {
                what: "HTTP requests",
                limit: self.limits.http_requests,
                setting: "WASAGA_STEP_MAX_HTTP_REQUESTS",
            };
            return Err(self.fail(CallError::Limit(limit.to_string())));
        }
        // Recorded answers were checked against the list when they were made; a replay
        // on another machine answers them without its own.
        if matches!(self.mode, Mode::Live)
            && let Err(reason) = self.net.allows(&parts.uri)
        {
            return Err(self.fail(CallError::Outbound(format!("{method} {url}: {reason}"))));
        }
        let mut sent_body = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                sent_body.extend_from_slice(&data);
                if sent_body.len() > self.limits.http_request_bytes {
                    let limit = LimitExceeded {
                        what: "bytes of an HTTP request body",
                        limit: self.limits.http_request_bytes,
                        setting: "WASAGA_STEP_MAX_HTTP_REQUEST_BYTES",
                    };
                    return Err(self.fail(CallError::Limit(limit.to_string())));
                }
            }
        }
        let mut headers = parts.headers;
        headers.remove(HOST);
        if !headers.contains_key(IDEMPOTENCY_KEY) {
            let key = format!("{}/{}/{n}", self.event_id, self.net.step);
            if let Ok(value) = HeaderValue::from_str(&key) {
                headers.insert(IDEMPOTENCY_KEY, value);
            }
        }
        let shown: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let exchange = |response: Option<HttpAnswer>, error: Option<String>| HostCall::Http {
            method: method.to_string(),
            url: url.clone(),
            headers: shown.clone(),
            body: RecordedBytes(sent_body.clone()),
            response,
            error,
        };
        match &self.mode {
            Mode::Closed(why) => Err(self.fail(CallError::Outbound(format!("would call out: {method} {url} ({why})")))),
            Mode::Recorded(exchanges) => {
                let found = {
                    let mut exchanges = exchanges.lock();
                    let position = exchanges.iter().position(|c| {
                        matches!(c, HostCall::Http { method: m, url: u, body: b, .. }
                            if *m == method.as_str() && *u == url && b.0 == sent_body)
                    });
                    position.map(|i| exchanges.remove(i))
                };
                let Some(HostCall::Http { response, error, .. }) = found else {
                    let why = format!("would call out: {method} {url} is not among the recorded requests");
                    return Err(self.fail(CallError::Outbound(why)));
                };
                self.record(exchange(response.clone(), error.clone()));
                match response {
                    Some(answer) => answer_to_step(answer.status, &answer.headers, answer.body.0),
                    None => Err(HttpError::InternalError(error)),
                }
            }
            Mode::Live => {
                let mut outgoing = headers;
                for (name, value) in &self.net.policy.headers {
                    outgoing.insert(name.clone(), value.clone());
                }
                let remaining = self.deadline.saturating_duration_since(Instant::now());
                let sent = self
                    .net
                    .client
                    .request(method.clone(), url.as_str())
                    .headers(outgoing)
                    .timeout(remaining)
                    .body(sent_body.clone())
                    .send()
                    .await;
                let mut response = match sent {
                    Ok(response) => response,
                    Err(error) => {
                        if let Some(refused) = source_of::<InternalAddress>(&error) {
                            return Err(self.fail(CallError::Outbound(format!("{method} {url}: {refused}"))));
                        }
                        self.record(exchange(None, Some(without_url(&error))));
                        return Err(wasi_error(&error));
                    }
                };
                let status = response.status().as_u16();
                let answer_headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .filter(|(name, _)| *name != TRANSFER_ENCODING)
                    .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
                    .collect();
                let mut answer = Vec::new();
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(error) => {
                            self.record(exchange(None, Some(without_url(&error))));
                            return Err(wasi_error(&error));
                        }
                    }
                    if answer.len() > self.limits.http_response_bytes {
                        let limit = LimitExceeded {
                            what: "bytes of an HTTP response body",
                            limit: self.limits.http_response_bytes,
                            setting: "WASAGA_STEP_MAX_HTTP_RESPONSE_BYTES",
                        };
                        return Err(self.fail(CallError::Limit(limit.to_string())));
                    }
                }
                let recorded =
                    HttpAnswer { status, headers: answer_headers.clone(), body: RecordedBytes(answer.clone()) };
                self.record(exchange(Some(recorded), None));
                answer_to_step(status, &answer_headers, answer)
            }
        }
    }
}

/// The error of `error`'s chain of type `E`, if any.
fn source_of<'a, E: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// A client error without the URL repeated (the recording has it).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(source) = next {
        text = format!("{text}: {source}");
        next = source.source();
    }
    text
}

fn wasi_error(error: &reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::ConnectionTimeout
    } else if error.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::InternalError(Some(without_url(error)))
    }
}

fn answer_to_step(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
    builder.body(body).map_err(|e| HttpError::InternalError(Some(e.to_string())))
}

/// The hooks wasmtime-wasi-http calls for one call's requests.
pub(crate) struct Hooks {
    pub(crate) call: Arc<CallNet>,
}

type Sent = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Hooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        self.call.net.forbidden.clone()
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Sent,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Sent), HttpError>> + Send> {
        // Numbered as the step sends them, whatever order the answers come in.
        let n = {
            let mut sent = self.call.sent.lock();
            *sent += 1;
            *sent - 1
        };
        let call = self.call.clone();
        Box::new(async move {
            let response = call.send(n, request).await?;
            Ok((response, Box::new(async { Ok(()) }) as Sent))
        })
    }
}
