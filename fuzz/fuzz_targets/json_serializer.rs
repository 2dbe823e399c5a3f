//! Fuzz target `json_serializer`: see `fuzz_checks::json_serializer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::json_serializer(data));
