//! Checks a component must pass before it may serve: its binary layer, its imports
//! (only the contract and the inert WASI interfaces) and its export of the handler, plus
//! the manifest it describes itself with.

use super::LoadError;
use super::bindings::HANDLER_EXPORTS;
use wasaga_sdk::events::kinds;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The export every step provides, in the current contract.
pub const HANDLER_EXPORT: &str = super::bindings::HANDLER_CURRENT;
/// Contract versions a step may be built against (the minor of each `0.x`).
const CONTRACT_VERSIONS: [&str; 2] = ["0.1.", "0.2."];

/// Interfaces of the contract a step may import.
const CONTRACT_IMPORTS: [&str; 5] = ["types", "state", "log", "archive", "provenance"];
/// WASI 0.2 packages linked with an empty context (a `std` guest needs them to link),
/// and HTTP, whose requests the host sends only to the step's allow-list.
const WASI_PACKAGES: [&str; 6] = ["cli", "io", "clocks", "random", "filesystem", "http"];

/// Refuse anything that is not a component before compiling it.
pub fn check_binary(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8 are the version and layer: 1 for a core module, 0x0d with layer 1 for
    // a component.
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::CoreModule),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => Err(LoadError::NotWasm),
    }
}

/// The names a component imports at its top level, read from its binary without
/// compiling it.
pub fn component_imports(bytes: &[u8]) -> Result<Vec<String>, LoadError> {
    use wasmparser::{Parser, Payload};
    let mut imports = Vec::new();
    // Nested modules and components have imports of their own, satisfied inside.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| LoadError::Compile(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| LoadError::Compile(e.to_string()))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(imports)
}

/// What a component asks of the instance pool, read from its binary: the pool's slots
/// have fixed sizes, so a component beyond them could never be instantiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Core module instances created when it is instantiated.
    pub core_instances: u32,
    /// Linear memories its core modules define.
    pub memories: u32,
    /// Tables its core modules define.
    pub tables: u32,
    /// The largest initial size of one of its memories, in bytes.
    pub largest_memory_bytes: u64,
}

/// Count what instantiating the component creates, without compiling it.
pub fn component_shape(bytes: &[u8]) -> Result<Shape, LoadError> {
    use wasmparser::{Instance, Parser, Payload};
    let mut shape = Shape::default();
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Compile(e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if matches!(instance.map_err(invalid)?, Instance::Instantiate { .. }) {
                        shape.core_instances += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    shape.largest_memory_bytes = shape.largest_memory_bytes.max(memory.initial.saturating_mul(page));
                    shape.memories += 1;
                }
            }
            Payload::TableSection(reader) => shape.tables += reader.count(),
            _ => {}
        }
    }
    Ok(shape)
}

/// Refuse a component importing anything outside the contract, before compiling it.
pub fn check_imports(bytes: &[u8]) -> Result<(), LoadError> {
    match component_imports(bytes)?.into_iter().find(|name| !import_allowed(name)) {
        Some(name) => Err(LoadError::ForbiddenImport(name)),
        None => Ok(()),
    }
}

/// Whether an import name is one the host links.
pub fn import_allowed(name: &str) -> bool {
    let Some((package, rest)) = name.split_once('/') else {
        return false;
    };
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    match package {
        "wasaga:saga" => {
            CONTRACT_IMPORTS.contains(&interface) && CONTRACT_VERSIONS.iter().any(|v| version.starts_with(v))
        }
        // Of HTTP only the client side: a step serves no requests.
        "wasi:http" => matches!(interface, "types" | "outgoing-handler") && version.starts_with("0.2."),
        _ => {
            package.strip_prefix("wasi:").is_some_and(|pkg| WASI_PACKAGES.contains(&pkg) && version.starts_with("0.2."))
        }
    }
}

/// Refuse a component whose imports or exports are outside the contract; otherwise
/// the handler export it has (the newest, if it has several).
pub fn check_world(engine: &Engine, component: &Component) -> Result<&'static str, LoadError> {
    let ty = component.component_type();
    if let Some((import, _)) = ty.imports(engine).find(|(name, _)| !import_allowed(name)) {
        return Err(LoadError::ForbiddenImport(import.to_owned()));
    }
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    match HANDLER_EXPORTS.iter().find(|handler| exports.iter().any(|name| name == *handler)) {
        Some(handler) => Ok(handler),
        None => Err(LoadError::MissingHandler {
            exports: if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") },
        }),
    }
}

/// Whether `kind` is an event kind a step may subscribe to: `*`, a kind of the saga,
/// `prefix.*` of a saga namespace, or anything in the step's own namespace (`name.…`).
pub fn subscription_known(step: &str, kind: &str) -> bool {
    if kind == "*" || kinds::ALL.contains(&kind) {
        return true;
    }
    if let Some(prefix) = kind.strip_suffix(".*") {
        return prefix == step || kinds::ALL.iter().any(|k| k.split('.').next() == Some(prefix));
    }
    kind.strip_prefix(step).is_some_and(|rest| rest.starts_with('.') && valid_kind(rest.trim_start_matches('.')))
}

/// Whether `kind` is a well-formed event kind: dotted lowercase words.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 128
        && kind.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_outside_the_contract_are_refused() {
        for (name, allowed) in [
            ("wasaga:saga/state@0.1.0", true),
            ("wasaga:saga/archive@0.1.0", true),
            ("wasaga:saga/handler@0.1.0", false),
            ("wasaga:saga/state@0.2.0", true),
            ("wasaga:saga/state@0.3.0", false),
            ("wasi:io/streams@0.2.3", true),
            ("wasi:cli/environment@0.2.0", true),
            ("wasi:filesystem/preopens@0.2.6", true),
            ("wasi:sockets/tcp@0.2.3", false),
            ("wasi:http/outgoing-handler@0.2.0", true),
            ("wasi:http/types@0.2.6", true),
            ("wasi:http/incoming-handler@0.2.0", false),
            ("wasi:http/outgoing-handler@0.3.0", false),
            ("wasi:io/streams@0.3.0", false),
            ("acme:evil/thing", false),
            ("plain", false),
        ] {
            assert_eq!(import_allowed(name), allowed, "{name}");
        }
    }

    #[test]
    fn binary_layers_are_told_apart() {
        assert!(matches!(check_binary(b"hello world"), Err(LoadError::NotWasm)));
        assert!(matches!(check_binary(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule)));
        assert!(check_binary(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn subscriptions_must_name_known_kinds() {
        for (step, kind, known) in [
            ("payment", "stock.reserved", true),
            ("payment", "stock.*", true),
            ("analytics", "*", true),
            ("payment", "payment.audit", true),
            ("payment", "payment.*", true),
            ("payment", "stock.reservd", false),
            ("payment", "bogus.*", false),
            ("payment", "", false),
            ("payment", "payment.", false),
        ] {
            assert_eq!(subscription_known(step, kind), known, "{step} {kind}");
        }
    }
}
