//! Fuzz target `chat_frame`: see `fuzz_checks::chat_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::chat_frame(data));
