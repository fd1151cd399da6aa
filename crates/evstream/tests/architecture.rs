//! `docs/architecture.md` says which way imports go inside the `evstream` crate: each module
//! uses only modules of the layers below its own, so there are no cycles and nothing imports
//! upward. This test reads every source file and holds the code to that table.
//!
//! A file's module is the first segment of its path under `src/` (`src/ship/lane.rs` belongs
//! to `ship`), except a feature's `config.rs` (`src/ship/config.rs`): section configuration
//! types are leaves that the root `config` gathers, so they count as part of `config`. A use
//! is any `crate::<module>` path outside comments and outside `#[cfg(test)]` modules (tests
//! may reach anywhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use its own layer's other modules only where this
/// table lists them as allowed, and any module of a lower layer. Keep in step with the
/// "Imports" table of `docs/architecture.md` (checked below).
const LAYERS: &[&[&str]] = &[
    &["error", "envelope", "keys"],
    &["redis"],
    &["config"],
    &["schema", "telemetry", "partitions"],
    &["publish"],
    &["ship"],
    &["consume"],
    &["archive"],
    &["ops"],
    &["status", "audit", "history", "exporter"],
    &["fuzzing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/ entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/ship/lane/send.rs` is `["ship", "lane", "send"]`.
fn path_of(relative: &Path) -> Vec<String> {
    relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect()
}

/// The layer module a module path belongs to, as defined in this file's docs: its first
/// segment, except a feature's section configuration (`ship::config`), which belongs to
/// `config` when the feature sits above `config` (the `redis` plumbing sits below it, so its
/// `[redis]` section is its own).
fn target_of<S: AsRef<str>>(path: &[S]) -> String {
    let first = path[0].as_ref();
    let above_config = layer_of(first) > layer_of("config");
    if path.len() >= 2 && path[1].as_ref() == "config" && above_config {
        return "config".to_owned();
    }
    first.to_owned()
}

/// `(line, target module)` for every `crate::` or `super::` use in the non-test code of
/// `text`, the code of the module at `module` (its path, as [`path_of`] gives it).
fn uses(text: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let code = line.split("//").next().unwrap_or("").trim();
        if code == "#[cfg(test)]" {
            // The test module runs to the end of the file, by the project's convention.
            if lines
                .peek()
                .is_some_and(|(_, l)| l.trim_start().starts_with("mod "))
            {
                break;
            }
        }
        for root in ["crate::", "super::"] {
            let mut rest = code;
            while let Some(at) = rest.find(root) {
                let before = rest[..at].chars().last();
                rest = &rest[at + root.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                    continue; // `evstream_crate::`, `$crate::`, `super::super::` (seen once)
                }
                let mut path: Vec<String> = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if root == "super::" {
                    // Relative to the parent of this module; `super::super::` climbs on.
                    let mut base = module[..module.len() - 1].to_vec();
                    while path.first().is_some_and(|p| p == "super") {
                        path.remove(0);
                        base.pop();
                    }
                    base.extend(path);
                    path = base;
                }
                if path
                    .first()
                    .is_some_and(|p| p.chars().next().is_some_and(char::is_lowercase))
                {
                    found.push((n + 1, target_of(&path)));
                }
            }
        }
    }
    found
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative == Path::new("lib.rs") {
            continue; // the crate root declares and re-exports everything
        }
        let module = path_of(relative);
        let from = target_of(&module);
        let Some(from_layer) = layer_of(&from) else {
            panic!(
                "src/{}: module `{from}` is in no layer of LAYERS",
                relative.display()
            );
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to) in uses(&text, &module) {
            if to == from {
                continue;
            }
            let Some(to_layer) = layer_of(&to) else {
                panic!(
                    "src/{}:{line}: `crate::{to}` is in no layer",
                    relative.display()
                );
            };
            let at = format!("src/{}:{line}", relative.display());
            if to_layer >= from_layer {
                upward.push(format!("{at}: `{from}` uses `{to}`"));
            }
            edges.entry((from.clone(), to)).or_insert(at);
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up or sideways (move the shared part down a layer, or change \
         LAYERS and docs/architecture.md if the design changed):\n{}",
        upward.join("\n")
    );
    assert!(
        !edges.is_empty(),
        "no `crate::` use found: the scan is broken"
    );
}

#[test]
fn the_architecture_page_lists_the_same_layers() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/architecture.md"),
    )
    .expect("docs/architecture.md");
    for (n, layer) in LAYERS.iter().enumerate() {
        for module in *layer {
            let row = format!("| {n} | `{module}` |");
            assert!(
                page.lines().any(|l| l.starts_with(&row)),
                "docs/architecture.md: no row starting `{row}` in the imports table"
            );
        }
    }
}

#[test]
fn the_scan_sees_uses_and_skips_comments_and_tests() {
    let text = "use crate::ship::Shipper;\n// crate::ops in a comment\n\
                let c = crate::ship::config::ShipConfig::default();\n\
                #[cfg(test)]\nmod tests {\n    use crate::ops::Ops;\n}\n";
    let module = path_of(Path::new("ops/config.rs"));
    assert_eq!(
        uses(text, &module),
        vec![(1, "ship".to_owned()), (3, "config".to_owned())]
    );
    assert_eq!(
        uses("use super::webhook::Endpoint;\n", &module),
        vec![(1, "ops".to_owned())]
    );
    assert_eq!(target_of(&module), "config");
    assert_eq!(target_of(&path_of(Path::new("redis/config.rs"))), "redis");
}
