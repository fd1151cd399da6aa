//! The fuzz targets' corpus (`fuzz/corpus/<target>/`), replayed as ordinary tests: every input
//! found by a fuzzing run stays a regression test, and the hand-written seeds named
//! `valid-*` / `invalid-*` must be accepted / refused (without panicking either way).

use std::path::Path;

use evstream::fuzzing;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(inputs.iter().any(|(name, _)| name.starts_with("valid-")));
    inputs
}

fn check(name: &str, accepted: bool) {
    if name.starts_with("valid-") {
        assert!(accepted, "{name} must be accepted");
    } else if name.starts_with("invalid-") {
        assert!(!accepted, "{name} must be refused");
    }
}

#[test]
fn decode_entry_corpus() {
    for (name, input) in corpus("decode_entry") {
        check(&name, fuzzing::decode_entry(&input));
    }
}

#[test]
fn schema_upgrade_corpus() {
    let registry = fuzzing::shipped_registry();
    for (name, input) in corpus("schema_upgrade") {
        check(&name, fuzzing::upgrade(&registry, &input));
    }
}

#[test]
fn journal_record_corpus() {
    for (name, input) in corpus("journal_record") {
        let records = fuzzing::journal_records(&input);
        let payload = fuzzing::journal_payload(&input);
        match name.as_str() {
            "valid-two-records" => assert_eq!(records, 2),
            "invalid-torn" => assert_eq!(records, 1, "the whole first record survives"),
            "valid-payload-only" => assert_eq!(payload, Some(2)),
            other => check(other, records > 0),
        }
    }
}

#[test]
fn xreadgroup_reply_corpus() {
    for (name, input) in corpus("xreadgroup_reply") {
        check(&name, fuzzing::xreadgroup_reply(&input));
    }
}
