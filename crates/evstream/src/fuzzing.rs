//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! (`tests/fuzz_corpus.rs`): the parsers that read what someone else wrote. Not a stable API.

use crate::schema::Registry;

/// Decodes a stream entry the way a consumer does, from bytes split into fields: `\n`
/// separates `name=value` pairs (anything goes in a value but `\n`). Every outcome is a
/// value or an error, never a panic.
pub fn decode_entry(input: &[u8]) -> bool {
    let fields =
        crate::consume::decode::Fields::from_pairs(input.split(|&b| b == b'\n').map(|pair| {
            match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            }
        }));
    crate::consume::decode::decode("1-0", &fields, 1, 64 * 1024, true).is_ok()
}

/// Decodes bytes as the reply of an `XREADGROUP` on the consumer's reading connection:
/// `true` if they start with a complete, well-formed reply. Every outcome is a value, never
/// a panic.
pub fn xreadgroup_reply(input: &[u8]) -> bool {
    crate::consume::reader::decode_for_fuzzing(input).is_some()
}

/// Validates and migrates a payload: the first byte picks the event type among the
/// registry's, the second the version (1 to 4), the rest is the JSON.
pub fn upgrade(registry: &Registry, input: &[u8]) -> bool {
    let (Some(&kind), Some(&version), Some(json)) = (input.first(), input.get(1), input.get(2..))
    else {
        return false;
    };
    let types = registry.summary();
    let Some(summary) = types.get(usize::from(kind) % types.len().max(1)) else {
        return false;
    };
    let event_type = summary.event_type.as_str();
    let Ok(mut data) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    registry
        .upgrade(event_type, u32::from(version % 4) + 1, &mut data)
        .is_ok()
}

/// Reads a spill journal segment's bytes as the journal does (length, CRC, payload): the
/// number of records decoded before the first damaged one.
pub fn journal_records(input: &[u8]) -> usize {
    crate::ship::journal::fuzz_segment(input)
}

/// Decodes bytes as one journal record's payload (as if its CRC had matched): the number of
/// events, or `None` if malformed.
pub fn journal_payload(input: &[u8]) -> Option<usize> {
    crate::ship::journal::fuzz_payload(input)
}

/// The registry of the repository's `schemas/` directory, which the fuzz target and the
/// corpus replay validate against.
pub fn shipped_registry() -> Registry {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    Registry::from_dir(&dir).unwrap_or_else(|error| panic!("schemas/ must load: {error}"))
}
