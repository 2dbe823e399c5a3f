//! Fuzz target `config_file`: see `fuzz_checks::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::config_file(data));
