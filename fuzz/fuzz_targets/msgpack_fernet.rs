//! Fuzz target `msgpack_fernet`: see `fuzz_checks::msgpack_fernet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::msgpack_fernet(data));
