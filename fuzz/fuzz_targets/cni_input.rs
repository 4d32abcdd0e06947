//! A CNI runtime's configuration and variables: see `sluice_cni::fuzz::cni_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_cni::fuzz::cni_input(data));
