//! A spill journal segment (torn, corrupt or hostile) read back, and the same bytes decoded
//! as one record's payload (past the CRC, which random input rarely matches).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    evstream::fuzzing::journal_records(data);
    evstream::fuzzing::journal_payload(data);
});
