//! Fuzz target `msgpack`: see `fuzz_checks::msgpack`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::msgpack(data));
