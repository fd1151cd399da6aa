//! A payload validated and migrated by the repository's schemas.
#![no_main]
use std::sync::OnceLock;

static REGISTRY: OnceLock<evstream::schema::Registry> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let registry = REGISTRY.get_or_init(evstream::fuzzing::shipped_registry);
    evstream::fuzzing::upgrade(registry, data);
});
