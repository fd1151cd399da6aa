//! Bytes on the consumer's reading connection, decoded as an `XREADGROUP` reply.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    evstream::fuzzing::xreadgroup_reply(data);
});
