//! A stream entry written by anyone, decoded as a consumer does.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    evstream::fuzzing::decode_entry(data);
});
