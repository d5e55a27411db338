//! Who may emit which event kind. Every kind has exactly one owner: the host (`order.*`,
//! `step.*`, `stock.set`), a step its own namespace (`<name>.*`), and the saga's shared
//! namespaces the step the configuration names (`payment.*` → payment, `stock.*` →
//! inventory unless `[steps.NAME] owns` says otherwise). A step's call that emits a kind
//! it does not own fails; the host's consumer acts only on events whose emitter owns them.

use std::collections::BTreeMap;

/// The name events of the host carry as their emitter.
const HOST: &str = super::HOST_CONSUMER;

/// Shared namespaces and the steps that own them unless configured otherwise.
pub const DEFAULT_OWNERS: [(&str, &str); 2] = [("payment.*", "payment"), ("stock.*", "inventory")];

/// Kinds of a shared namespace that stay the host's: the admin stock API's.
const HOST_KINDS: [&str; 1] = ["stock.set"];

/// The owner of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    Host,
    Step(&'a str),
}

impl Owner<'_> {
    /// The emitter name an event of this owner carries.
    pub fn name(&self) -> &str {
        match self {
            Owner::Host => HOST,
            Owner::Step(step) => step,
        }
    }
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Host => f.write_str("the host"),
            Owner::Step(step) => write!(f, "step {step}"),
        }
    }
}

/// Why a configured claim cannot stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnsError {
    #[error("[steps.{step}] owns {pattern:?}: expected a kind (`ns.name`) or a namespace (`ns.*`)")]
    Invalid { step: String, pattern: String },
    #[error("[steps.{step}] owns {pattern:?}, which is the host's")]
    Host { step: String, pattern: String },
    #[error("{pattern:?} is claimed by both [steps.{first}] and [steps.{second}]")]
    Twice { pattern: String, first: String, second: String },
}

/// The ownership table: claims (a kind, or a namespace `ns.*`) → step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    claims: BTreeMap<String, String>,
}

impl Default for Owners {
    fn default() -> Self {
        Owners { claims: DEFAULT_OWNERS.iter().map(|(p, s)| ((*p).to_owned(), (*s).to_owned())).collect() }
    }
}

impl Owners {
    /// The defaults with `configured` claims (step → patterns) on top: a configured claim
    /// replaces the default owner of the same pattern.
    pub fn with_claims<'a>(configured: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Result<Owners, OwnsError> {
        let mut owners = Owners::default();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (step, patterns) in configured {
            for pattern in patterns {
                if !valid_claim(pattern) {
                    return Err(OwnsError::Invalid { step: step.to_owned(), pattern: pattern.clone() });
                }
                let probe = pattern.strip_suffix('*').map_or_else(|| pattern.clone(), |ns| format!("{ns}x"));
                if super::host_owned_kind(&probe) || HOST_KINDS.contains(&pattern.as_str()) {
                    return Err(OwnsError::Host { step: step.to_owned(), pattern: pattern.clone() });
                }
                if let Some(first) = seen.insert(pattern.clone(), step.to_owned()) {
                    return Err(OwnsError::Twice { pattern: pattern.clone(), first, second: step.to_owned() });
                }
                owners.claims.insert(pattern.clone(), step.to_owned());
            }
        }
        Ok(owners)
    }

    /// Who owns `kind`: the host's kinds first, then an exact claim, then a namespace
    /// claim, then the step whose name is the kind's namespace.
    pub fn owner<'a>(&'a self, kind: &'a str) -> Owner<'a> {
        if super::host_owned_kind(kind) || HOST_KINDS.contains(&kind) {
            return Owner::Host;
        }
        if let Some(step) = self.claims.get(kind) {
            return Owner::Step(step);
        }
        let namespace = kind.split_once('.').map_or(kind, |(ns, _)| ns);
        match self.claims.get(&format!("{namespace}.*")) {
            Some(step) => Owner::Step(step),
            None => Owner::Step(namespace),
        }
    }

    /// Whether `emitter` (a step name, or `host`) owns `kind`.
    pub fn owns(&self, emitter: &str, kind: &str) -> bool {
        self.owner(kind).name() == emitter
    }

    /// What `step` owns, for listings: its own namespace, unless claimed by another, and
    /// its claims.
    pub fn owned_by(&self, step: &str) -> Vec<String> {
        let own = format!("{step}.*");
        let mut owned: Vec<String> = Vec::new();
        if self.claims.get(&own).is_none_or(|owner| owner == step) {
            owned.push(own.clone());
        }
        owned.extend(self.claims.iter().filter(|(p, s)| *s == step && **p != own).map(|(p, _)| p.clone()));
        owned
    }
}

fn valid_claim(pattern: &str) -> bool {
    let body = pattern.strip_suffix(".*").unwrap_or(pattern);
    let (namespace, rest) = match pattern.strip_suffix(".*") {
        Some(ns) => (ns, None),
        None => match body.split_once('.') {
            Some((ns, rest)) => (ns, Some(rest)),
            None => return false,
        },
    };
    let word = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    };
    word(namespace) && !namespace.contains('.') && rest.is_none_or(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_owner() {
        let owners = Owners::default();
        for (kind, owner) in [
            ("order.completed", Owner::Host),
            ("step.dead-lettered", Owner::Host),
            ("stock.set", Owner::Host),
            ("stock.reserved", Owner::Step("inventory")),
            ("payment.captured", Owner::Step("payment")),
            ("hostile.done", Owner::Step("hostile")),
            ("plain", Owner::Step("plain")),
        ] {
            assert_eq!(owners.owner(kind), owner, "{kind}");
        }
        assert!(owners.owns("host", "stock.set"));
        assert!(!owners.owns("inventory", "stock.set"));
        assert!(!owners.owns("forger", "payment.captured"));
    }

    #[test]
    fn configured_claims_replace_the_default_owner() {
        let claims = vec!["stock.*".to_owned(), "fx.rate".to_owned()];
        let owners = Owners::with_claims([("warehouse", claims.as_slice())]).expect("valid");
        assert_eq!(owners.owner("stock.reserved"), Owner::Step("warehouse"));
        assert_eq!(owners.owner("stock.set"), Owner::Host);
        assert_eq!(owners.owner("fx.rate"), Owner::Step("warehouse"));
        assert_eq!(owners.owner("fx.other"), Owner::Step("fx"));
        assert_eq!(owners.owned_by("warehouse"), ["warehouse.*", "fx.rate", "stock.*"]);
        assert_eq!(owners.owned_by("inventory"), ["inventory.*"]);
    }

    #[test]
    fn claims_on_the_hosts_kinds_or_twice_are_refused() {
        for pattern in ["order.*", "step.x", "stock.set", "bad", "Pay.*", ".*", "a.*.*"] {
            let claims = vec![pattern.to_owned()];
            assert!(Owners::with_claims([("x", claims.as_slice())]).is_err(), "{pattern}");
        }
        let claims = vec!["fx.*".to_owned()];
        let twice = Owners::with_claims([("a", claims.as_slice()), ("b", claims.as_slice())]);
        assert!(matches!(twice, Err(OwnsError::Twice { .. })));
    }
}
