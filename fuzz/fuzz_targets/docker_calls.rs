//! libnetwork's calls to the docker plugin: see `sluice_control::fuzz::docker_calls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_control::fuzz::docker_calls(data));
