//! Fuzz target `names`: see `fuzz_checks::names`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::names(data));
