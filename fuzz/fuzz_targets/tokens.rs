//! Fuzz target `tokens`: see `fuzz_checks::tokens`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::tokens(data));
