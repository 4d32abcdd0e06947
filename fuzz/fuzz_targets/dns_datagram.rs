//! Datagrams to the embedded DNS server: see `sluice_control::fuzz::dns_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_control::fuzz::dns_datagram(data));
