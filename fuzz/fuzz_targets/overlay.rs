//! Feeds arbitrary frames with arbitrary offload state (GSO kind and size, checksum offsets)
//! through an overlay host, and its super-frames through the runtime's cutting (see
//! `testkit::fuzz_overlay`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::testkit::fuzz_overlay(data);
});
