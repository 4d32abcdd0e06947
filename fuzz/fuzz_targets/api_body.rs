//! API request bodies (network create, connect, disconnect) through parsing, validation and
//! the state's rules: see `sluice_control::fuzz::api_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_control::fuzz::api_body(data));
