//! Fuzz target `gateway_frame`: see `fuzz_checks::gateway_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::gateway_frame(data));
