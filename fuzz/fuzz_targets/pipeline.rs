//! Feeds arbitrary frame sequences to the whole pipeline (see `testkit::fuzz_frames`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::testkit::fuzz_frames(data);
});
