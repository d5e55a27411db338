//! The direction of imports, checked: each module of the host may name only modules of
//! lower layers, so a change to the saga never ripples into the store, and the store can
//! be read without the saga. Like rust-analyzer's tidy tests, this reads the sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may use any module of a lower layer, none of its own
/// or a higher one.
const LAYERS: [&[&str]; 9] = [
    &["features"],
    &["event", "backoff", "redact", "fsutil", "telemetry", "shutdown"],
    &["store", "archive"],
    &["runtime", "transport"],
    &["stream", "outbox", "registry"],
    &["saga"],
    &["config"],
    &["http", "cli"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(file, line, from, to)` of every `crate::<to>` a module `from` names against the layers.
fn back_imports(root: &Path) -> Vec<(String, usize, String, String)> {
    let mut files = Vec::new();
    sources(root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        let Some(first) = relative.iter().next().and_then(|c| c.to_str()) else { continue };
        let from = first.trim_end_matches(".rs");
        let Some(from_layer) = layer_of(from) else { continue };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let to: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                match layer_of(&to) {
                    Some(to_layer) if to != from && to_layer >= from_layer => {
                        found.push((relative.display().to_string(), n + 1, from.to_owned(), to));
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = back_imports(&root);
    assert!(found.is_empty(), "modules naming a module of their own or a higher layer: {found:#?}");
}

#[test]
fn a_planted_back_import_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("store")).expect("folder");
    std::fs::write(dir.path().join("store/mod.rs"), "use crate::event::now_ms;\nuse crate::saga::HOST_CONSUMER;\n")
        .expect("file");
    let found = back_imports(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].2.as_str(), found[0].3.as_str()), ("store", "saga"));
}

#[test]
fn every_module_has_a_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut unplaced = BTreeMap::new();
    for entry in std::fs::read_dir(&root).expect("src").flatten() {
        let name = entry.file_name().to_string_lossy().trim_end_matches(".rs").to_owned();
        if !matches!(name.as_str(), "lib" | "main" | "layering") && layer_of(&name).is_none() {
            unplaced.insert(name, ());
        }
    }
    assert!(unplaced.is_empty(), "modules with no layer: {:?}", unplaced.keys());
}
