//! What a step may reach: the allow-list, the secret headers and settings from
//! `[steps.NAME]`, and the client that sends its requests, whose resolver refuses
//! internal addresses the list does not name.

use http::{HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{DEFAULT_FORBIDDEN_HEADERS, ForbiddenHeaderFilter};

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
    pub(super) step: Arc<str>,
    pub(super) policy: OutboundPolicy,
    pub(super) client: reqwest::Client,
    pub(super) forbidden: ForbiddenHeaderFilter,
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
    pub(super) fn allows(&self, uri: &http::Uri) -> Result<(), String> {
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
pub(super) struct InternalAddress {
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
pub(super) fn internal(ip: IpAddr) -> bool {
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
