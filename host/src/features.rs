//! The optional backends this binary was built with. Each is a cargo feature, all on by
//! default; `cargo xtask run` builds the embedded default without them, since the
//! brokers' and clouds' clients are most of a first build.

/// Each optional backend's feature, and whether it is built in.
pub const BACKENDS: [(&str, bool); 6] = [
    ("postgres", cfg!(feature = "postgres")),
    ("mssql", cfg!(feature = "mssql")),
    ("rabbitmq", cfg!(feature = "rabbitmq")),
    ("kafka", cfg!(feature = "kafka")),
    ("cloud", cfg!(feature = "cloud")),
    ("otlp", cfg!(feature = "otlp")),
];

/// `wasaga --version`: the version and the backends built in.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let mut built = vec!["sqlite", "embedded", "file", "memory"];
        built.extend(BACKENDS.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
        format!("{} (backends: {})", env!("CARGO_PKG_VERSION"), built.join(", "))
    })
}

/// Why `what` cannot be used: the binary was built without `feature`.
pub fn missing(what: &str, feature: &str) -> String {
    format!(
        "{what} needs the `{feature}` feature, which this wasaga was built without: build it with `cargo build -p wasaga-host --features {feature}` (every backend is in the default build; `cargo xtask run --services` builds them)"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_backend_names_its_feature_and_how_to_build_it() {
        let message = super::missing("amqp://…", "rabbitmq");
        assert!(message.contains("`rabbitmq` feature"), "{message}");
        assert!(message.contains("--features rabbitmq"), "{message}");
    }
}
