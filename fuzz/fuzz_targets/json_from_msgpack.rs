//! Fuzz target `json_from_msgpack`: see `fuzz_checks::json_from_msgpack`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::json_from_msgpack(data));
