//! Outbound HTTP of steps (`wasi:http/outgoing-handler`): the host sends each request
//! itself, only to the step's allow-list, inside the call's deadline and budgets, with an
//! idempotency key it makes and secret headers the component never sees; and records
//! every exchange. Calls that must not reach the network (dry runs, shadows, replays)
//! answer from a recording or refuse as "would call out".
//!
//! **Architecture Invariant:** only a call made with [`Network::Live`] sends anything.

use super::CallError;
use super::limits::{CallLimits, LimitExceeded};
use super::recorder::Recorder;
use bytes::Bytes;
use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasaga_sdk::recording::{Bytes as RecordedBytes, HostCall, HttpAnswer};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

/// The header whose value the host makes unless the step set one.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// One allowed target: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `http://127.0.0.1:9911`, `https://api.example.com` (port from the scheme).
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{text:?}: a target's scheme is http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!("{text:?}: a target is a scheme, a host and a port, nothing more"));
        }
        let host = url.host_str().ok_or_else(|| format!("{text:?} names no host"))?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or_else(|| format!("{text:?} names no port"))?;
        Ok(Target { scheme: scheme.to_owned(), host, port })
    }

    /// The address the target names, when its host is one.
    fn ip(&self) -> Option<IpAddr> {
        self.host.trim_start_matches('[').trim_end_matches(']').parse().ok()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// What one step may reach and with which secrets, from `[steps.NAME]`.
#[derive(Clone, Default)]
pub struct OutboundPolicy {
    /// `outbound`: nothing by default.
    pub targets: Vec<Target>,
    /// `outbound_headers`: added by the host to every request; never shown to the step,
    /// logged or recorded.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `env`: the step's settings, given to it as its WASI environment.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OutboundPolicy")
            .field("targets", &self.targets.iter().map(ToString::to_string).collect::<Vec<_>>())
            .field("headers", &secrets)
            .field("env", &self.env)
            .finish()
    }
}

/// A step's policy with the client that sends its requests.
pub(crate) struct StepNet {
    step: Arc<str>,
    pub(super) policy: OutboundPolicy,
    client: reqwest::Client,
    forbidden: ForbiddenHeaderFilter,
}

impl StepNet {
    pub(crate) fn new(step: &str, policy: OutboundPolicy) -> Result<StepNet, String> {
        let listed: Vec<IpAddr> = policy.targets.iter().filter_map(Target::ip).collect();
        let client = reqwest::Client::builder()
            // A redirect is answered to the step, which may follow it: through the list.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Guard { listed }))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client of step {step}: {e}"))?;
        let secret: Vec<HeaderName> = policy.headers.iter().map(|(name, _)| name.clone()).collect();
        // The step may not set a header the host keeps secret.
        let forbidden: ForbiddenHeaderFilter =
            Arc::new(move |name| DEFAULT_FORBIDDEN_HEADERS.contains(name) || secret.contains(name));
        Ok(StepNet { step: step.into(), policy, client, forbidden })
    }

    /// Whether the list names `uri`'s target; the refusal names the target and the setting.
    fn allows(&self, uri: &http::Uri) -> Result<(), String> {
        let scheme = uri.scheme_str().unwrap_or_default();
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let target = Target { scheme: scheme.to_owned(), host, port };
        if self.policy.targets.contains(&target) {
            return Ok(());
        }
        let step = &self.step;
        Err(match self.policy.targets.is_empty() {
            true => format!("{target} is not allowed: [steps.{step}] outbound lists no target"),
            false => {
                let list: Vec<String> = self.policy.targets.iter().map(ToString::to_string).collect();
                format!("{target} is not in [steps.{step}] outbound ({})", list.join(", "))
            }
        })
    }
}

/// Resolves names for a step's client, refusing loopback, link-local and private
/// addresses unless the step's list names the address itself.
struct Guard {
    listed: Vec<IpAddr>,
}

/// A name that resolved only to addresses a step may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to loopback, link-local or private addresses ({found}); list the address to allow it")]
struct InternalAddress {
    host: String,
    found: String,
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let listed = self.listed.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> =
                found.iter().copied().filter(|a| !internal(a.ip()) || listed.contains(&a.ip())).collect();
            if kept.is_empty() {
                let found = found.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
                return Err(Box::new(InternalAddress { host, found }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified or broadcast.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| internal(IpAddr::V4(v4)))
        }
    }
}

/// Where a call's requests go.
#[derive(Debug, Clone, Copy)]
pub enum Network<'a> {
    /// Nowhere: a request fails the call as "would call out", saying why.
    Closed(&'static str),
    /// Out: the live call.
    Live,
    /// Answered from these recorded calls (their `Http` ones); nothing is sent. The
    /// allow-list was checked when they were made. `settings` replaces the step's
    /// configured ones (a replay runs with the recording's).
    Recorded { calls: &'a [HostCall], settings: Option<&'a [(String, String)]> },
}

enum Mode {
    Closed(&'static str),
    Live,
    /// The recorded exchanges not answered yet.
    Recorded(Mutex<Vec<HostCall>>),
}

/// One call's outbound state, shared with the requests in flight.
pub(super) struct CallNet {
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
    pub(super) fn new(
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
    pub(super) fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// What failed the call, whatever the step made of the error it was given.
    pub(super) fn failure(&self) -> Option<CallError> {
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
pub(super) struct Hooks {
    pub(super) call: Arc<CallNet>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_scheme_a_host_and_a_port() {
        let t = Target::parse("http://127.0.0.1:9911").expect("parses");
        assert_eq!(t.to_string(), "http://127.0.0.1:9911");
        assert_eq!(
            Target::parse("https://API.example.com").expect("parses").to_string(),
            "https://api.example.com:443"
        );
        for bad in ["ftp://x", "http://x/path", "http://u:p@x", "127.0.0.1:80", "http://x?y=1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_told_apart() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn the_list_decides_and_the_refusal_names_the_target_and_the_setting() {
        let policy =
            OutboundPolicy { targets: vec![Target::parse("http://127.0.0.1:9911").expect("t")], ..Default::default() };
        let net = StepNet::new("payment", policy).expect("client");
        assert!(net.allows(&"http://127.0.0.1:9911/v1/charges".parse().expect("uri")).is_ok());
        let refused = net.allows(&"http://127.0.0.1:9912/v1/charges".parse().expect("uri")).expect_err("refused");
        assert!(refused.contains("http://127.0.0.1:9912") && refused.contains("[steps.payment] outbound"), "{refused}");
        let none = StepNet::new("inventory", OutboundPolicy::default()).expect("client");
        let refused = none.allows(&"https://api.example.com/x".parse().expect("uri")).expect_err("refused");
        assert!(refused.contains("https://api.example.com:443") && refused.contains("lists no target"), "{refused}");
    }
}
